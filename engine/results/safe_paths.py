"""Local file names made from strings the server chose: case titles, question texts, usernames, file names.

Everything the export writes under its output folder is named through :func:`safe_component`, so a hostile or merely
odd name (``../../etc``, ``/abs``, NUL, 10 000 characters, ``CON``, a right-to-left override) can never write outside
that folder, never names a special file, and never fails on a file-name length limit. Names that had to change get a
short hash of the original appended, so two different server names never land on the same local file.

Pure: no I/O except :func:`inside`, which resolves symlinks already on disk.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from pathlib import Path, PurePosixPath

# Most filesystems allow 255 bytes per name; staying well below leaves room for the hash and for suffixes such as
# ``.mha`` or ``-ground-truth``.
MAX_COMPONENT_BYTES = 120
_HASH_CHARS = 10
# Characters that separate paths or are refused by Windows / SMB shares (the export folder may live on one).
_FORBIDDEN = frozenset('/\\<>:"|?*')
# Unicode categories with no business in a file name: controls (NUL, newline, ESC), format characters (bidi
# overrides that disguise an extension, zero-width joiners), surrogates, private use and unassigned code points.
_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn"})
_WINDOWS_RESERVED = frozenset(
    {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"}
    | {f"COM{n}" for n in "123456789¹²³"}
    | {f"LPT{n}" for n in "123456789¹²³"}
)
_SUFFIX = re.compile(r"^[a-z0-9]{1,10}$")
_COMPOUND_SUFFIXES = ("nii.gz",)


class UnsafePathError(ValueError):
    """A path would leave the output folder; raised only if sanitising was bypassed (a bug, not bad data)."""


def _fingerprint(original: str) -> str:
    return hashlib.sha256(original.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH_CHARS]


def _truncate_utf8(text: str, max_bytes: int) -> str:
    encoded = text.encode("utf-8")
    if len(encoded) <= max_bytes:
        return text
    return encoded[:max_bytes].decode("utf-8", "ignore")


def safe_component(name: object, *, fallback: str = "unnamed") -> str:
    """One path component (no separators) for the server string ``name``.

    A name that is already safe is kept as it is (so ``case-001`` stays ``case-001``); any other is cleaned and gets
    ``-<hash of the original>`` appended, which keeps distinct names distinct. ``fallback`` (itself cleaned) stands in
    for a name that is empty or nothing but dots and spaces.
    """
    original = "" if name is None else str(name)
    text = unicodedata.normalize("NFC", original)
    cleaned = "".join(
        "_" if ch in _FORBIDDEN or unicodedata.category(ch) in _INVISIBLE_CATEGORIES else ch for ch in text
    )
    # Leading dots make hidden files (and '..' a parent); Windows drops trailing dots and spaces, so 'a.' and 'a'
    # would collide there.
    cleaned = cleaned.strip(" .\t")
    if not cleaned:
        cleaned = fallback  # ours, not the server's: a plain word
    if cleaned.split(".", 1)[0].rstrip(" ").upper() in _WINDOWS_RESERVED:
        cleaned = "_" + cleaned
    if cleaned == original and len(original.encode("utf-8", "surrogatepass")) <= MAX_COMPONENT_BYTES:
        return original
    room = MAX_COMPONENT_BYTES - _HASH_CHARS - 1
    return f"{_truncate_utf8(cleaned, room).rstrip(' .')}-{_fingerprint(original)}"


def file_suffix(url_or_name: str, *, default: str = "bin") -> str:
    """The file type of a server file URL or name, lower case without the dot: its last suffix, as gcapi names
    downloads (docs/gc-api.md §4), except a known compound one (``nii.gz``). Anything odd gives ``default``."""
    name = PurePosixPath(url_or_name.split("?", 1)[0].split("#", 1)[0]).name.lower()
    for compound in _COMPOUND_SUFFIXES:
        if name.endswith("." + compound):
            return compound
    suffix = PurePosixPath(name).suffix.lstrip(".")
    return suffix if _SUFFIX.match(suffix) else default


def relative_path(*components: str) -> PurePosixPath:
    """A relative path from components that are each already safe; refuses anything that is not a plain name."""
    for component in components:
        if not component or component in (".", "..") or "/" in component or "\\" in component or "\x00" in component:
            raise UnsafePathError(f"not a safe path component: {component!r}")
    return PurePosixPath(*components)


def inside(root: Path, relative: PurePosixPath | str) -> Path:
    """``root / relative`` after checking it stays inside ``root`` once symlinks that already exist are resolved
    (belt and braces: the components are safe, but a symlink planted inside the folder could still point out)."""
    relative = PurePosixPath(relative)
    if relative.is_absolute() or ".." in relative.parts:
        raise UnsafePathError(f"{relative} is not a path inside {root}")
    base = root.resolve()
    target = (base / Path(*relative.parts)).resolve()
    if target != base and not target.is_relative_to(base):
        raise UnsafePathError(f"{relative} leads outside {root} (to {target})")
    return target


def unique_names(names: list[str], *, fallback: str = "unnamed") -> list[str]:
    """Safe components for ``names`` in order, made unique among themselves: a repeated name (two questions with the
    same text) gets ``-2``, ``-3``… Unique case-insensitively too, so the folders also work on macOS and Windows."""
    result: list[str] = []
    taken: set[str] = set()
    for name in names:
        base = safe_component(name, fallback=fallback)
        candidate, number = base, 1
        while candidate.casefold() in taken:
            number += 1
            candidate = f"{base}-{number}"
        taken.add(candidate.casefold())
        result.append(candidate)
    return result
