"""``sqsmaster dashboard``: see and steer the fleet in a browser, served from the job store.

``app`` (the Flask app, its guards and the server), ``api`` (the JSON API under ``/api/``),
``views`` (the pages and the timeline picture), ``queries`` (what the views show, no web
framework), ``actions`` (what the buttons do), ``static/`` (one page template, one script,
one stylesheet: no build step, no CDN). Flask and waitress are the ``dashboard`` extra,
imported only by :func:`create_app` / :func:`serve`.
"""

from __future__ import annotations

from .app import DashboardConfig, create_app, parse_bind, serve

__all__ = ["DashboardConfig", "create_app", "parse_bind", "serve"]
