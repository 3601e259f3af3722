"""The optional parts of gcbulk (``pip install 'gcbulk[emulator]'``, ``'gcbulk[postgres]'``) and how to say one is missing.

The base install carries what ``plan``, ``run``, ``status``, ``verify``, ``export``, ``reorder`` and the Python API need
on the embedded SQLite ledger. The emulator's libraries (panimg with its image codecs, cryptography, nh3, aiofiles) and
the PostgreSQL driver are extras, imported only where they are used; a command that needs one checks for it first and
names the ``pip install`` line, instead of failing later with a bare ``ModuleNotFoundError``.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass


@dataclass(frozen=True)
class Extra:
    """One extra of pyproject.toml: its name and the top-level modules it installs that the code imports."""

    name: str
    modules: tuple[str, ...]

    def missing_modules(self) -> list[str]:
        """The extra's modules this interpreter cannot import (found by name, without importing them: panimg takes
        seconds to import)."""
        return [module for module in self.modules if importlib.util.find_spec(module) is None]

    def install_hint(self, needed_for: str) -> str | None:
        """None when the extra is installed; otherwise one line saying what needs it, what is missing and the command
        that installs it, e.g. ``gcbulk demo needs the emulator extra (panimg, nh3 not installed): pip install
        'gcbulk[emulator]'``."""
        missing = self.missing_modules()
        if not missing:
            return None
        return (
            f"{needed_for} needs gcbulk's {self.name} extra ({', '.join(missing)} not installed): "
            f"pip install 'gcbulk[{self.name}]'"
        )


# The modules each extra brings that gcbulk imports (pyproject.toml lists the distributions; tests/packaging checks
# the two agree by installing each extra into a fresh environment).
EMULATOR = Extra("emulator", ("panimg", "cryptography", "nh3", "aiofiles"))
POSTGRES = Extra("postgres", ("psycopg",))
