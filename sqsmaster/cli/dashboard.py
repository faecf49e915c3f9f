"""``sqsmaster dashboard``: serve the web dashboard over a job store and the queues given."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from ..errors import ConfigurationError
from . import EXIT_OK

#: Where --auth is read from when not given: a command line is visible to every user of the host (ps).
AUTH_ENV = "SQSMASTER_DASHBOARD_AUTH"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "dashboard", help="serve the web dashboard: what runs, what failed; kill, requeue, redrive",
        description="Serve the dashboard over the job store (--store or $SQSMASTER_STORE) and the queues given. "
                    "Bound to 127.0.0.1 by default; another address needs --auth. Needs flask and waitress: "
                    "pip install 'sqsmaster[dashboard]'. Exit codes: 0 stopped, 2 bad options (an address "
                    "reachable from other machines without --auth, flask missing), 3 the store cannot be opened.")
    parser.add_argument("--store", metavar="URL", help="the job store (sqlite:///PATH or dynamodb://TABLE)")
    parser.add_argument("--queue", metavar="URL", action="append", default=[], dest="queues",
                        help="a queue whose depths the overview shows (repeat for several)")
    parser.add_argument("--bind", default="127.0.0.1:5555", metavar="HOST:PORT",
                        help="where to listen (default 127.0.0.1:5555)")
    parser.add_argument("--read-only", action="store_true", help="refuse every action (kill, requeue, redrive)")
    parser.add_argument("--auth", metavar="USER:PASSWORD", default=None,
                        help=f"require HTTP basic auth (needed off loopback); default ${AUTH_ENV}, which keeps "
                             "the password out of the process list")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..ops.dashboard import DashboardConfig, parse_bind, serve
    from ..ops.dashboard.app import LOOPBACK_HOSTS, loopback
    from ..store import StoreError, open_store, store_url_from_env

    auth = args.auth if args.auth is not None else (os.environ.get(AUTH_ENV) or None)
    host, port = parse_bind(args.bind, auth)
    if len(set(args.queues)) != len(args.queues):
        raise ConfigurationError("--queue: a queue is given twice")
    url = store_url_from_env(args.store)
    if url is None:
        raise ConfigurationError("no job store: give --store URL or set SQSMASTER_STORE")
    try:
        store = open_store(url, create=False)
    except StoreError as exc:
        print(f"sqsmaster: error: {exc}", file=sys.stderr)
        return 3
    try:
        print(f"sqsmaster dashboard on http://{host}:{port}/ ({url}{', read-only' if args.read_only else ''})",
              flush=True)
        hosts = LOOPBACK_HOSTS if loopback(host) and auth is None else None
        serve(DashboardConfig(store, list(args.queues), read_only=args.read_only, auth=auth,
                              allowed_hosts=hosts), host, port)
    finally:
        store.close()
    return EXIT_OK
