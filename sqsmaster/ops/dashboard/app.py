"""The dashboard's Flask app and its guards: basic auth, the CSRF token, read-only mode; and the server.

Flask and waitress are an optional extra (``pip install 'sqsmaster[dashboard]'``), imported
only here and only when a dashboard is built. Every request passes :func:`_guard` first:
with ``auth`` a request without the right user and password gets 401 (compared in constant
time); every POST must carry the page's CSRF token in the ``X-Sqsmaster-Csrf`` header (a
form on another site cannot set a header, and a script there cannot read the token); in
read-only mode every POST gets 403 before anything runs.
"""

from __future__ import annotations

import base64
import hmac
import ipaddress
import secrets
import socket
from dataclasses import dataclass, field
from typing import Any

from ...errors import ConfigurationError
from ...store import JobStore
from .queries import DepthCache

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


def create_app(config: DashboardConfig) -> Any:
    """The Flask app for ``config``. Raises ConfigurationError with the install hint without Flask."""
    try:
        from flask import Flask
    except ImportError:
        raise ConfigurationError(INSTALL_HINT) from None
    from .api import api
    from .views import views

    app = Flask(__name__, static_folder="static", template_folder="static")
    app.config["DASHBOARD"] = config
    app.before_request(lambda: _guard(config))
    app.register_blueprint(api)
    app.register_blueprint(views)
    return app


def _guard(config: DashboardConfig) -> Any:
    """None to go on, or the refusal (401 without the right credentials, 403 for a POST without the CSRF
    token or in read-only mode)."""
    from flask import jsonify, request

    if config.allowed_hosts is not None and _host_name(request.host) not in config.allowed_hosts:
        return jsonify(error=f"this dashboard does not answer to the name {request.host!r}"), 403
    if config.auth is not None and not _authorised(request.headers.get("Authorization", ""), config.auth):
        response = jsonify(error="authentication required")
        response.status_code = 401
        response.headers["WWW-Authenticate"] = 'Basic realm="sqsmaster dashboard"'
        return response
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return None
    if not hmac.compare_digest(request.headers.get(CSRF_HEADER, "").encode(), config.csrf_token.encode()):
        return jsonify(error=f"missing or wrong {CSRF_HEADER} header (reload the page)"), 403
    if config.read_only:
        return jsonify(error="the dashboard is read-only (started with --read-only): no action is allowed"), 403
    return None


def _host_name(host: str) -> str:
    """``127.0.0.1`` of ``127.0.0.1:5555``, ``::1`` of ``[::1]:5555``, lower case."""
    host = host.lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _authorised(header: str, auth: str) -> bool:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        given = base64.b64decode(encoded.strip(), validate=True)
    except ValueError:
        return False
    return hmac.compare_digest(given, auth.encode())


def serve(config: DashboardConfig, host: str, port: int, threads: int = 8) -> None:
    """Serve the dashboard with waitress until interrupted (Ctrl-C, SIGTERM)."""
    try:
        import waitress
    except ImportError:
        raise ConfigurationError(INSTALL_HINT) from None
    waitress.serve(create_app(config), host=host, port=port, threads=threads, ident="sqsmaster-dashboard")
