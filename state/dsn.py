"""Telling a PostgreSQL ledger from a SQLite one, and showing its DSN without the password.

Apart from ``state/pg_store.py`` so that a run on the embedded SQLite ledger never imports psycopg (with numpy, which
psycopg loads when it is installed): ~0.15 s of every process's start-up.
"""

from __future__ import annotations

import re
from typing import Any

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def is_postgres_dsn(location: object) -> bool:
    return isinstance(location, str) and location.startswith(POSTGRES_SCHEMES)


def dialect(db: Any) -> str:
    """``"postgresql"`` or ``"sqlite"``: for the rare statement the two stores cannot share."""
    return getattr(db, "dialect", "sqlite")


def shown_dsn(dsn: str) -> str:
    """The DSN without its password, for messages, logs and the ledger's ``path`` (the password is never shown)."""
    shown = re.sub(r"^(postgres(?:ql)?://[^:/@]*):[^@]*@", r"\1:***@", dsn)
    return re.sub(r"((?:\?|&)password=)[^&]*", r"\1***", shown)  # libpq also takes it as a parameter
