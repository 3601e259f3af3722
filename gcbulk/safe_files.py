"""Files gcbulk writes where someone else may have been first: created exclusively, never through a symbolic link,
readable by the owner only (0600: they carry case titles, which are often patient identifiers).

Hand-written over ``os.open`` because no library combines the three: ``tempfile.mkstemp`` gives an exclusive 0600
temporary in the target folder (``O_EXCL`` also refuses an existing symlink), and ``O_NOFOLLOW`` keeps an append or
a resume from writing through a link planted at the final name. ``os.replace`` then swaps a planted link itself, never
the file it points to.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

PRIVATE_MODE = 0o600


class UnsafeFileError(OSError):
    """The path is a symbolic link (or not a regular file): gcbulk will not write through it."""


# Windows has no O_NOFOLLOW (and no fchmod before Python 3.13): there a link is refused by a check before the open
# (creating links needs a privilege there), and the file's mode bits mean little beyond read-only.
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def _open_private(path: Path, flags: int) -> int:
    try:
        if not _NOFOLLOW and path.is_symlink():
            raise OSError(f"{path} is a symbolic link")
        fd = os.open(path, flags | os.O_CREAT | _NOFOLLOW | getattr(os, "O_CLOEXEC", 0), PRIVATE_MODE)
    except OSError as error:
        if path.is_symlink():
            raise UnsafeFileError(
                f"{path} is a symbolic link; gcbulk does not write through links: remove it and run again"
            ) from None
        raise error
    if hasattr(os, "fchmod"):
        os.fchmod(fd, PRIVATE_MODE)  # a file made 0644 by an older version, or by someone else, is tightened
    return fd


def open_private_append(path: Path) -> IO[str]:
    """``path`` opened for appending text, created 0600; raises :class:`UnsafeFileError` if it is a link."""
    return os.fdopen(_open_private(path, os.O_WRONLY | os.O_APPEND), "a", encoding="utf-8")


def open_private_binary(path: Path, *, append: bool) -> IO[bytes]:
    """``path`` opened for binary writing (appended to, or truncated), created 0600, never through a link."""
    flags = os.O_WRONLY | (os.O_APPEND if append else os.O_TRUNC)
    return os.fdopen(_open_private(path, flags), "ab" if append else "wb")


@contextlib.contextmanager
def replacing(path: Path, mode: str = "w", *, durable: bool = True, **open_args: Any) -> Iterator[IO[Any]]:
    """A file that replaces ``path`` only once it is completely written and flushed to disk. The temporary file is
    made by ``mkstemp`` in the same folder (exclusive, 0600, a fresh random name: a link planted under any fixed
    name is never followed); it is removed if writing fails. ``durable=False`` skips the fsync (still atomic): for
    files a rerun checks and rewrites anyway, where an fsync per file would cost milliseconds each."""
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    temporary = Path(name)
    try:
        with os.fdopen(fd, mode, **open_args) as handle:
            yield handle
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_private_text(path: Path, text: str) -> None:
    """``text`` written to ``path`` atomically, 0600, never through a link."""
    with replacing(path, "w", encoding="utf-8") as handle:
        handle.write(text)


PRIVATE_DIR_MODE = 0o700


def make_private_dirs(path: Path, *, root: Path | None = None) -> None:
    """``path`` and every missing folder above it, made 0700 (an export's sub-folders are named after case titles,
    which are often patient identifiers: others must not list them). With ``root``, the folders that already exist
    between ``root`` (excluded) and ``path`` are tightened to 0700 too (made 0755 by an older version)."""
    missing = []
    folder = path
    while not os.path.lexists(folder):
        missing.append(folder)
        folder = folder.parent
    for new in reversed(missing):
        try:
            os.mkdir(new, PRIVATE_DIR_MODE)
        except FileExistsError:  # made meanwhile by a concurrent download: tightened below
            pass
        os.chmod(new, PRIVATE_DIR_MODE, follow_symlinks=False)
    if root is None:
        return
    root = root.resolve()
    folder = path.resolve()
    while folder != root and folder.is_relative_to(root):
        if not folder.is_symlink() and folder.is_dir() and folder.stat().st_mode & 0o077:
            os.chmod(folder, PRIVATE_DIR_MODE)
        folder = folder.parent


def tighten_folders(root: Path) -> None:
    """``root`` and every folder below it (links not followed) made 0700 where others could list them: an export
    folder written by an older version, or made by hand before the first export."""
    for folder, subfolders, _ in os.walk(root, followlinks=False):
        for name in [".", *subfolders]:
            path = os.path.join(folder, name)
            if os.path.islink(path):
                continue
            if os.stat(path).st_mode & 0o077:
                os.chmod(path, PRIVATE_DIR_MODE)
