"""The ledger's SQLite file: created private (0600), locked against a second process, configured for durability.

The only other module besides ``gcbulk.state.ledger`` that touches sqlite_utils.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout
from sqlite_utils import Database

from gcbulk.state.errors import LedgerDamaged, LedgerDiskFull, LedgerError, LedgerLocked, LedgerNotALedger


class ProcessLock:
    """An exclusive lock on ``<ledger>.lock``, held while the ledger is open, on Linux, macOS and Windows.

    Why a sidecar file: SQLite itself takes POSIX ``fcntl`` locks on the database file, and POSIX locks are per process
    and dropped when *any* descriptor of that file is closed, so a lock of ours on the database file would interfere
    with SQLite's. SQLite's own locks only serialise single transactions; two gcbulk processes interleaving
    transactions would both send the same parts. Why filelock: it takes the platform's own lock (``flock`` on POSIX,
    ``msvcrt.locking`` on Windows) — a lock the operating system drops when the process dies, even by kill -9, so a
    crash never leaves a stale lock behind — and it is tested on the three platforms, which this project is not.
    """

    def __init__(self, ledger_path: Path) -> None:
        # The real path: two symlinks (or a bind mount and its source) naming one ledger must share one lock.
        real = Path(os.path.realpath(ledger_path))
        self.path = real.with_name(real.name + ".lock")
        self._lock: FileLock | None = FileLock(self.path, timeout=0, mode=0o600)
        try:
            self._lock.acquire()
        except Timeout:
            self._lock = None
            raise LedgerLocked(
                f"ledger {ledger_path} is in use by another gcbulk process (pid {self._holder()}); wait for it to "
                "finish or stop it (it can be resumed), then try again. 'gcbulk status' can read the ledger meanwhile."
            ) from None
        self._note_holder()

    def _note_holder(self) -> None:
        """Writes this process's pid into the lock file, for the message a second process shows. Best effort: on
        Windows the lock is mandatory and a second handle may not write the locked byte; the lock still holds."""
        try:
            fd = os.open(self.path, os.O_WRONLY)
        except OSError:
            return
        try:
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
        except OSError:
            pass
        finally:
            os.close(fd)

    def _holder(self) -> str:
        # Bounded: a pid is a few digits, and the file is ours (0600), but nothing read is trusted beyond 64 bytes.
        try:
            with open(self.path, "rb") as file:
                text = file.read(64).decode(errors="replace").strip()
        except OSError:
            text = ""
        return text if text.isdigit() else "unknown"

    def release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None


def create_private_file(path: Path) -> None:
    # Created 0600 before SQLite touches it; SQLite gives the -wal and -shm files the database file's permissions.
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    os.close(fd)


def configure(db: Database) -> None:
    db.enable_wal()
    # Durability: WAL + synchronous=NORMAL survives a crash of the process (kill -9: a commit is in the WAL file
    # before it returns); only power loss or an OS crash may lose the last commits, until the next fsync. Most
    # records are recoverable that way — a part recorded as not done is sent again, a display set whose pk was lost
    # is found again by its title (docs/gc-api.md §3), a 'done' lost is re-verified by polling. Those that are not
    # — what the server has just created and only this record names: an upload (an orphan counting against the
    # 2000-upload cap for 24 h, docs/gc-api.md §1), an upload session, a display set — commit under ``fsynced_commits``
    # (synchronous=FULL), whose fsync of the WAL also makes every commit before it durable. Measured on R1: 18
    # fsynced transactions per 2-file case before, 5 now (benchmarks/README.md).
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("PRAGMA foreign_keys=ON")
    # A reader (gcbulk status) and the running engine may meet on a commit; wait instead of failing at once.
    db.execute("PRAGMA busy_timeout=5000")


@contextmanager
def fsynced_commits(db: object) -> Iterator[None]:
    """The commits inside are fsynced before they return (``synchronous=FULL``; see ``configure``). On a PostgreSQL
    ledger (``state/pg_store.py``) every commit is durable already: nothing changes."""
    if not isinstance(db, Database) or db.conn.in_transaction:
        # Inside a transaction its caller opened (benchmarks/report_scale.py records 500 synthetic cases per
        # transaction), SQLite refuses to change the safety level: that transaction's commit is the one that counts,
        # and its caller chose how it is made. The engine opens none around these transitions.
        yield
        return
    db.execute("PRAGMA synchronous=FULL")
    try:
        yield
    finally:
        db.execute("PRAGMA synchronous=NORMAL")


def check_integrity(db: Database, path: Path) -> None:
    """SQLite's ``quick_check`` (seconds even for a large ledger; the full ``integrity_check`` also verifies indexes
    against tables and can take minutes). A damaged ledger is refused before anything trusts it."""
    rows = [row[0] for row in db.execute("PRAGMA quick_check").fetchall()]
    if rows != ["ok"]:
        raise LedgerDamaged(_damaged(path, "; ".join(rows[:3])))


def _damaged(path: Path | str, detail: str) -> str:
    return (
        f"the ledger {path} is damaged ({detail}). Restore it from a backup, or move it aside (with its -wal and "
        "-shm files) and run 'gcbulk plan' to start a new one; 'gcbulk verify' then compares it with the server"
    )


@contextmanager
def ledger_faults(path: Path | str) -> Iterator[None]:
    """Turns SQLite's and the disk's failures into LedgerErrors that say what to do (exit 2 in every command), in
    one place: the open paths and every call the engine makes on the ledger's thread go through here."""
    try:
        yield
    except sqlite3.DatabaseError as exc:
        text = str(exc).lower()
        if "not a database" in text or "file is encrypted" in text:
            raise LedgerNotALedger(
                f"{path} is not a gcbulk ledger (not an SQLite database); point --ledger (or "
                "GCBULK_LEDGER) at the job's ledger, or move the file aside"
            ) from None
        if "malformed" in text or "corrupt" in text:
            raise LedgerDamaged(_damaged(path, str(exc))) from None
        if "disk is full" in text or "disk i/o error" in text:
            raise LedgerDiskFull(
                f"no room to write the ledger {path} ({exc}); free space on its disk — nothing was "
                "half-written, and the run resumes where it stopped"
            ) from None
        if "unable to open" in text or "readonly" in text:
            raise LedgerError(
                f"cannot open the ledger {path} for writing ({exc}); check the folder's permissions and free space"
            ) from None
        raise
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise LedgerDiskFull(f"no room on the disk of the ledger {path}; free space and run again") from None
        raise
