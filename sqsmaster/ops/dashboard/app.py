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
from typing import Any

from ...errors import ConfigurationError
from .config import (  # noqa: F401  (the app's interface: the CLI and the tests import them from here)
    CSRF_HEADER,
    DEFAULT_BIND,
    INSTALL_HINT,
    LOOPBACK_HOSTS,
    DashboardConfig,
    loopback,
    parse_bind,
)


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
