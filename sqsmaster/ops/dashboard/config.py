"""What a dashboard serves and how (:class:`DashboardConfig`), and where it may listen (:func:`parse_bind`).

No Flask here: the API and the pages (which import Flask) and the app all read this module.
"""

from __future__ import annotations

import ipaddress
import secrets
import socket
from dataclasses import dataclass, field

from ...errors import ConfigurationError
from ...store import JobStore
from .queries import DepthCache, TtlCache, summaries

#: The header every POST must carry, holding the token the page was served with.
CSRF_HEADER = "X-Sqsmaster-Csrf"
#: The default address: loopback only.
DEFAULT_BIND = "127.0.0.1:5555"
#: The names a loopback dashboard answers to.
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
INSTALL_HINT = "the dashboard needs flask and waitress: pip install 'sqsmaster[dashboard]'"


@dataclass
class DashboardConfig:
    """What a dashboard serves and how: the store, the queues whose depths it shows, ``read_only`` (every
    action refused), ``auth`` (``user:password`` for HTTP basic auth, None for none)."""

    store: JobStore
    queues: list[str]
    read_only: bool = False
    auth: str | None = None
    #: Host names the requests may be addressed to (None: any). A loopback dashboard without auth takes only
    #: loopback names: a web page whose own name an attacker re-points at 127.0.0.1 (DNS rebinding) would
    #: otherwise be same-origin with the dashboard, read its token and act.
    allowed_hosts: frozenset[str] | None = None
    csrf_token: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    depths: DepthCache = field(default_factory=DepthCache)
    #: /api/jobs totals per filter
    counts: TtlCache = field(default_factory=TtlCache)
    #: the summarising views' scans; every action drops them
    summaries: TtlCache = field(default_factory=summaries)

    @property
    def user(self) -> str | None:
        return self.auth.split(":", 1)[0] if self.auth else None

    def who(self) -> str:
        """Who an action is recorded as: the auth user, or ``dashboard@HOST``."""
        return self.user or f"dashboard@{socket.gethostname()}"


def parse_bind(bind: str, auth: str | None) -> tuple[str, int]:
    """``HOST:PORT`` as a pair. Raises ConfigurationError for a malformed address, and for one that is not
    loopback when there is no ``auth`` (anyone on the network could kill tasks)."""
    host, sep, port = bind.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigurationError(f"--bind must be HOST:PORT (such as {DEFAULT_BIND}), not {bind!r}")
    if auth is not None and (":" not in auth or not auth.split(":", 1)[0] or not auth.split(":", 1)[1]):
        raise ConfigurationError("--auth must be USER:PASSWORD, both non-empty")
    if not loopback(host) and auth is None:
        raise ConfigurationError(f"--bind {bind} is reachable from other machines: give --auth USER:PASSWORD "
                                 "(and put TLS in front) or bind to 127.0.0.1")
    return host, int(port)


def loopback(host: str) -> bool:
    """True for an address only this machine can reach (``localhost``, 127.0.0.0/8, ``::1``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
