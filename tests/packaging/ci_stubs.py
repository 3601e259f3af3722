"""A PATH of stubs for testing the `.ci/` install scripts: a few real tools linked in, and ``id`` answering the uid
the test asks for (``STUB_UID``, root by default), so nothing is installed and no privilege is needed."""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path


def stub(folder: Path, name: str, body: str) -> None:
    (folder / name).write_text(f"#!/bin/bash\n{body}\n")
    (folder / name).chmod(0o755)


def stub_path(tmp_path: Path, tools: Iterable[str]) -> Path:
    folder = tmp_path / "bin"
    folder.mkdir()
    for tool in tools:
        found = shutil.which(tool)
        assert found, tool
        (folder / tool).symlink_to(found)
    stub(folder, "id", 'echo "${STUB_UID:-0}"')
    return folder
