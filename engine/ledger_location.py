"""Where a job's ledger is, and which of the job's workers this process is (issue 13).

The ledger is either a SQLite file (one process per job, the default) or a PostgreSQL database named by a DSN
(``postgresql://…`` or ``postgres://…``), shared by several ``gcbulk run`` processes. A DSN is kept as the string it
is: turned into a ``Path`` it would lose its ``//`` and stop being a DSN. Its password is never shown: every place that
prints a location uses :func:`shown_ledger`, and the password is registered with the one redaction path
(``gcbulk/redaction.py``) so that text gcbulk did not write itself (a driver's message, a traceback) is scrubbed too.

The worker id names this process among the job's workers: in the ledger's leases, in ``gcbulk status`` and on
``/metrics``. It defaults to ``<hostname>-<pid>``, unique on one machine and readable across several.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
from pathlib import Path
from urllib.parse import urlsplit

import platformdirs

from gcbulk.engine.gc.errors import ConfigurationError
from gcbulk.redaction import register_secret
from gcbulk.state.dsn import dsn_passwords, is_postgres_dsn, shown_dsn

LedgerLocation = Path | str  # a Path for a SQLite file, a str for a PostgreSQL DSN

LEDGER_HELP = (
    "the ledger: a file, or a PostgreSQL DSN postgresql://USER@HOST:PORT/DB shared by several workers "
    "(env GCBULK_LEDGER; default: <job stem>.ledger.sqlite beside the job file). Keep the password out "
    "of the command line, where ps shows it: PGPASSWORD, ~/.pgpass or GCBULK_LEDGER"
)
EVENTS_HELP = (
    "JSON event log, one line per state change (env GCBULK_EVENTS; default: <job stem>.events.jsonl beside "
    "the ledger file, or beside the job file when the ledger is a PostgreSQL DSN)"
)

WORKER_ID_MAX = 64
_WORKER_ID = re.compile(rf"[A-Za-z0-9._:-]{{1,{WORKER_ID_MAX}}}")
WORKER_ID_HELP = (
    f"this process's name among the job's workers, 1 to {WORKER_ID_MAX} of letters, digits and . _ : - "
    "(env GCBULK_WORKER_ID; default <hostname>-<pid>)"
)


def ledger_location(text: str | Path) -> LedgerLocation:
    """``--ledger``'s value: a DSN as it is (its password registered for redaction), else an absolute path.

    Never raises on a DSN: argparse would print the rejected value, password and all."""
    if isinstance(text, str) and is_postgres_dsn(text.strip()):
        dsn = text.strip()
        for form in dsn_passwords(dsn):  # as written (percent-encoded) and as libpq sends it
            register_secret(form)
        return dsn
    return Path(text).absolute()


def shown_ledger(location: LedgerLocation) -> str:
    """The location as messages, logs, reports and ``--json`` show it: a DSN without its password."""
    if isinstance(location, str) and is_postgres_dsn(location):
        return shown_dsn(location)
    return str(location)


def default_reorder_state(location: LedgerLocation, job_file: Path) -> Path:
    """Where ``gcbulk reorder --job`` keeps its plan and progress: beside the job's ledger file (or beside the job file
    when the ledger is a database), never in whatever folder the command happens to run in."""
    base = job_file if isinstance(location, str) else location
    return base.with_name(f"{job_file.stem}.reorder.sqlite")


def user_reorder_state(base_url: str, reader_study: str) -> Path:
    """Where a reorder named by ``--reader-study`` alone keeps its state: the user's state folder (platformdirs:
    ``$XDG_STATE_HOME``, default ``~/.local/state``, on Linux), one file per server and study."""
    host = urlsplit(base_url).netloc.replace(":", "_") or "server"
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in reader_study) or "study"
    return platformdirs.user_state_path("gcbulk", appauthor=False) / "reorder" / host / f"{name}.reorder.sqlite"


def default_events(location: LedgerLocation, job_file: Path) -> Path:
    """The event log's default: beside the ledger file, so a container's one volume holds both; beside the job file
    when the ledger is a database (each worker appends its own lines there)."""
    base = job_file if isinstance(location, str) else location
    return base.with_name(f"{job_file.stem}.events.jsonl")


def ledger_exists(location: LedgerLocation) -> bool:
    """A ledger file exists; a database is taken as one (``plan --dry-run`` on it reads the shared plan)."""
    return isinstance(location, str) or location.exists()


def add_ledger_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ledger", type=ledger_location, metavar="PATH|DSN", help=LEDGER_HELP)


def default_worker_id() -> str:
    """``<hostname>-<pid>``, made to pass :func:`parse_worker_id` whatever the host is called."""
    suffix = f"-{os.getpid()}"
    host = re.sub(r"[^A-Za-z0-9._:-]", "-", socket.gethostname()) or "host"
    return host[: WORKER_ID_MAX - len(suffix)] + suffix


def parse_worker_id(text: str) -> str:
    value = text.strip()
    if not _WORKER_ID.fullmatch(value):
        why = (
            "is empty"
            if not value
            else (
                f"is {len(value)} characters long"
                if len(value) > WORKER_ID_MAX
                else "holds a character other than letters, digits and . _ : -"
            )
        )
        raise ConfigurationError(
            f"the worker id (--worker-id, GCBULK_WORKER_ID) {text[:80]!r} {why}; give each worker of the job its own "
            f"name of 1 to {WORKER_ID_MAX} letters, digits and . _ : - (e.g. w1 or host-2), or leave it unset "
            "for <hostname>-<pid>"
        )
    return value
