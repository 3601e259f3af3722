"""gcbulk's memory: the SQLite ledger, its migrations and the state machine of every persisted object."""

import sys as _sys


def _import_sqlite_utils_without_numpy() -> None:
    """sqlite-utils imports numpy (and tries pandas) when it is first imported, only to map their scalar types to
    column types; the ledger stores neither. That is ~0.1 s of CPU at every start of a command that needs no numpy
    otherwise (``python -X importtime``; a ``gcbulk run`` of file sockets, ``gcbulk status``), so it is imported here,
    before any module of this package, with them hidden — unless something loaded them already. A later ``import
    numpy`` works as usual (the hiding entries are removed). Hand-written: sqlite-utils has no switch for this."""
    if "sqlite_utils" in _sys.modules:
        return
    hidden = [name for name in ("numpy", "pandas") if name not in _sys.modules]
    for name in hidden:
        _sys.modules[name] = None  # type: ignore[assignment]  # None in sys.modules makes `import name` fail
    try:
        import sqlite_utils  # noqa: F401
    finally:
        for name in hidden:
            if _sys.modules.get(name) is None:
                del _sys.modules[name]


_import_sqlite_utils_without_numpy()
