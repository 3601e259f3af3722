"""The ledger's SQLite file: created private (0600), locked against a second process, configured for durability.

The only other module besides ``gcbulk.state.ledger`` that touches sqlite_utils.
"""

from __future__ import annotations

import errno
import fcntl
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlite_utils import Database

from gcbulk.state.errors import LedgerDamaged, LedgerDiskFull, LedgerError, LedgerLocked, LedgerNotALedger


class ProcessLock:
    """An exclusive ``flock`` on ``<ledger>.lock``, held while the ledger is open.

    Why a sidecar file and flock: SQLite itself takes POSIX ``fcntl`` locks on the database file, and POSIX locks are
    per process and dropped when *any* descriptor of that file is closed, so a lock of ours on the database file would
    interfere with SQLite's. ``flock`` on a separate file is independent, and the kernel releases it when the process
    dies (even by kill -9), so a crash never leaves a stale lock behind. SQLite's own locks only serialise single
    transactions; two gcbulk processes interleaving transactions would both send the same parts.
    """

    def __init__(self, ledger_path: Path) -> None:
        # The real path: two symlinks (or a bind mount and its source) naming one ledger must share one lock.
        real = Path(os.path.realpath(ledger_path))
        self.path = real.with_name(real.name + ".lock")
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(self._fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(self._fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise LedgerLocked(
                    f"ledger {ledger_path} is in use by another gcbulk process (pid {holder}); wait for it to finish "
                    "or stop it (it can be resumed), then try again. 'gcbulk status' can read the ledger meanwhile."
                ) from None
            raise
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, str(os.getpid()).encode(), 0)

    def release(self) -> None:
        if self._fd >= 0:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = -1


def create_private_file(path: Path) -> None:
    # Created 0600 before SQLite touches it; SQLite gives the -wal and -shm files the database file's permissions.
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    os.close(fd)


def configure(db: Database) -> None:
    db.enable_wal()
    # Durability: synchronous=FULL fsyncs the WAL at every commit, so a recorded transition survives power loss as
    # well as kill -9 (WAL + NORMAL is already safe against a process crash; it may lose the last commits on power
    # loss). NORMAL would still be *recoverable* — a part recorded as not done is simply sent again, a display set
    # whose pk was lost is found again by its title (docs/gc-api.md §3), a 'done' lost is re-verified by polling — but an
    # upload whose pk was lost is an orphan on the server that counts against the 2000-upload cap for up to 24 h
    # (docs/gc-api.md §1), and lost part records re-send bytes. Commits are few compared with the bytes moved (one per part
    # of at least 5 MiB, and one per batch of cases while planning), so the fsync costs little; we take FULL.
    db.execute("PRAGMA synchronous=FULL")
    db.execute("PRAGMA foreign_keys=ON")
    # A reader (gcbulk status) and the running engine may meet on a commit; wait instead of failing at once.
    db.execute("PRAGMA busy_timeout=5000")


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
