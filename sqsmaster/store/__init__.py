"""The job store, picked by URL: ``sqlite:///PATH`` (one host) or ``dynamodb://TABLE?region=...`` (a fleet).

``open_store(url)`` returns a :class:`~sqsmaster.store.base.JobStore`; see
:mod:`sqsmaster.store.base` for the rows and the contract every store keeps.
"""

from __future__ import annotations

import os
from typing import Callable
from urllib.parse import urlsplit

from ..errors import ConfigurationError
from .base import (
    CANCEL,
    KILL,
    THEN_CHOICES,
    ActionRow,
    AttemptRow,
    FiredRow,
    Flag,
    JobFilter,
    JobStore,
    Page,
    StoreError,
    WorkerRow,
)

__all__ = ["open_store", "register_store_scheme", "store_url_from_env", "JobStore", "AttemptRow", "WorkerRow",
           "Flag", "FiredRow", "ActionRow", "JobFilter", "Page", "StoreError", "KILL", "CANCEL", "THEN_CHOICES"]

#: The environment variable every command reads when no --store is given.
STORE_ENV = "SQSMASTER_STORE"

_SCHEMES: dict[str, Callable[[str, bool], JobStore]] = {}


def register_store_scheme(scheme: str, factory: Callable[[str, bool], JobStore]) -> None:
    """Make :func:`open_store` build ``factory(url, create)`` for URLs of ``scheme``."""
    _SCHEMES[scheme] = factory


def open_store(url: str, create: bool = True) -> JobStore:
    """The job store at ``url``. ``create``: make the file / table if missing (else :class:`StoreError`).
    Raises ConfigurationError for a URL no store understands."""
    scheme = urlsplit(url).scheme
    if scheme not in _SCHEMES:
        raise ConfigurationError(f"not a job store URL: {url!r} (use sqlite:///PATH or dynamodb://TABLE)")
    return _SCHEMES[scheme](url, create)


def store_url_from_env(url: str | None) -> str | None:
    """``url`` if given, else ``$SQSMASTER_STORE`` (None when neither is set)."""
    return url or os.environ.get(STORE_ENV) or None


def _sqlite(url: str, create: bool) -> JobStore:
    from .sqlite import SqliteStore

    return SqliteStore(url, create=create)


register_store_scheme("sqlite", _sqlite)


def _dynamodb(url: str, create: bool) -> JobStore:
    from .dynamodb import DynamoStore

    return DynamoStore(url, create=create)


register_store_scheme("dynamodb", _dynamodb)
