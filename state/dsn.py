"""Telling a PostgreSQL ledger from a SQLite one, and showing its DSN without the password.

Apart from ``state/pg_store.py`` so that a run on the embedded SQLite ledger never imports psycopg (with numpy, which
psycopg loads when it is installed): ~0.15 s of every process's start-up.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def is_postgres_dsn(location: object) -> bool:
    return isinstance(location, str) and location.startswith(POSTGRES_SCHEMES)


def dialect(db: Any) -> str:
    """``"postgresql"`` or ``"sqlite"``: for the rare statement the two stores cannot share."""
    return getattr(db, "dialect", "sqlite")


# A DSN's password, wherever libpq reads one. One pattern for hiding it (``shown_dsn``) and for finding it to register
# with the redaction path (``dsn_passwords``): two that differ leave a password shown that the other one knew.
# * URL form, ``postgresql://user:PASSWORD@host``: libpq ends the userinfo at the first "@", but a password written
#   with a raw "@" (or "/", "?", "#", ":") is still the user's secret, which libpq then quotes in part as a host or a
#   port: the value runs to the line's last "@" (not past a ``password=`` parameter: that one is hidden on its own).
#   Hiding some of the host is better than showing some of the password.
# * Query form, ``?password=PASSWORD&…``: to the "&" that starts the next parameter (a segment with an "="); "#" is no
#   fragment to libpq, and a segment without "=" is no parameter, so both are the password's.
# * Keyword form, ``password=PASSWORD`` or ``password='PASS WORD'`` (libpq's conninfo, as psycopg builds it and driver
#   messages may quote it): to the next whitespace, or the closing quote.
_PASSWORD = re.compile(
    r"(?P<url_head>postgres(?:ql)?://[^:/@\s]*:)(?P<url>(?:(?![?&]password=).)*)(?=@)"
    r"|(?P<query_head>[?&]password=)(?P<query>[^&\n]*(?:&[^&=\n]*(?=[&\n]|$))*)"
    r"|(?P<keyword_head>(?<![^\s])password\s*=\s*)(?P<keyword>'(?:\\.|[^\\'])*'?|[^\s']\S*)"
)
_FORMS = ("url", "query", "keyword")
HIDDEN = "***"


def shown_dsn(dsn: str) -> str:
    """The DSN — or a driver's message quoting one — without its password, for messages, logs and the ledger's
    ``path`` (the password is never shown)."""
    return _PASSWORD.sub(lambda match: match[f"{_form(match)}_head"] + HIDDEN, dsn)


def dsn_passwords(dsn: str) -> set[str]:
    """The password(s) a DSN carries — in its user part (``user:pw@``), as a ``password=`` query parameter or keyword —
    each as written and as libpq sends it: what ``shown_dsn`` hides, and the pieces of it libpq may quote."""
    found: set[str] = set()
    for match in _PASSWORD.finditer(dsn):
        form = _form(match)
        written = match[form]
        for piece in (written, *_pieces_libpq_reads_apart(form, written)):
            found.update(password for password in (piece, _as_sent(form, piece)) if password)
    return found


def _pieces_libpq_reads_apart(form: str, written: str) -> list[str]:
    """A raw "@" in a URL's password, or "&" in a query's, splits it for libpq, whose error then quotes a piece after
    it as a host name, a port or a parameter ("failed to resolve host 'rest'"): those pieces are secrets too. Only
    then: a piece of a password libpq reads whole is no secret alone, and redacting it would garble the logs."""
    if form == "url" and "@" in written:
        head, tail = written.split("@", 1)
        return [head, *re.split(r"[@:/?,]", tail)]  # the rest is read as the hosts, ports and path
    if form == "query" and "&" in written:
        return written.split("&")
    return []


def _form(match: re.Match[str]) -> str:
    return next(form for form in _FORMS if match[form] is not None)


def _as_sent(form: str, written: str) -> str:
    """A URL's password percent-decoded; a quoted keyword value without its quotes and backslash escapes."""
    if form != "keyword":
        return unquote(written)
    if not written.startswith("'"):
        return written
    quoted = written[1:-1] if len(written) > 1 and written.endswith("'") else written[1:]
    return re.sub(r"\\(.)", r"\1", quoted)
