"""The job file and titles an archive export writes beside its case tree, so that ``gcbulk plan`` reads the tree back
to the sockets it came from (a round trip; ``engine/results/archive_export.py`` writes the tree).

The tree names every file after its socket, so one rule per socket and file form maps it back:

* a JSON value: ``<socket>.json`` → ``glob = "<socket>.json"``, ``value = true`` (the planner sends its content);
* a file value or a one-file image: ``<socket>.<ext>`` → ``glob = "<socket>.*"`` (slugs hold no dot, so the glob
  takes no other socket's file);
* a MetaImage image (``.mhd`` + its data file, under the server's names, which the header refers to):
  ``<socket>/<name>.mhd`` → ``glob = "<socket>/*.mhd"`` (the planner takes the data file along);
* a DICOM Image Set: ``<socket>/<SOP Instance UID>.dcm`` → ``glob = "<socket>/*.dcm"``, ``group = "dicom-series"``.

Folder names are made file-system safe and so may differ from the items' titles; ``titles.csv`` (``folder,title``,
read by the job's ``cases.titles_csv``) gives every case its item's title back. A later export keeps the target a user
named in ``job.toml``; a job file that differs in anything else is kept as ``job.previous.toml``.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from gcbulk.safe_files import replacing

CASES_DIR = "cases"
JOB_FILE = "job.toml"
TITLES_CSV = "titles.csv"
# The job needs a target before it can run; the export cannot know it (a new reader study, another archive).
TARGET_PLACEHOLDER = "replace-with-your-reader-study"
_TARGET_KEY = "reader_study = "
PREVIOUS_JOB_FILE = "job.previous.toml"  # an earlier job.toml that differs from the new one beyond its target
_MAX_JOB_BYTES = 1024**2


@dataclass(frozen=True, kw_only=True)
class TreeRule:
    """One ``[[rules]]`` table of the written job file."""

    socket: str
    glob: str
    value: bool = False
    group: str | None = None


def rule_for(socket: str, inner: Sequence[PurePosixPath], *, is_value: bool) -> TreeRule:
    """The rule that maps the files the export wrote for ``socket`` (paths inside the case folder) back to it."""
    if is_value:
        return TreeRule(socket=socket, glob=f"{socket}.json", value=True)
    if len(inner) == 1 and len(inner[0].parts) == 1:
        return TreeRule(socket=socket, glob=f"{socket}.*")
    suffixes = {path.suffix.lower() for path in inner}
    if ".mhd" in suffixes:
        return TreeRule(socket=socket, glob=f"{socket}/*.mhd")
    if suffixes == {".dcm"}:
        return TreeRule(socket=socket, glob=f"{socket}/*.dcm", group="dicom-series")
    return TreeRule(socket=socket, glob=f"{socket}/*", group="all")


def _toml_string(text: str) -> str:
    # A JSON string with ASCII escapes is a valid TOML basic string (TOML has the same escapes, \uXXXX included);
    # written by hand because the standard library reads TOML but does not write it, and this is the only writer.
    return json.dumps(text, ensure_ascii=True)


def write_titles(out_dir: Path, rows: Iterable[tuple[str, str, str]]) -> Path:
    """``titles.csv`` from ``(folder, title, archive item pk)`` rows.

    Plain CSV, not the formula-escaped cells of the answer tables: the planner reads this file back, and a title
    written as ``'=…`` would come back with the apostrophe."""
    path = out_dir / TITLES_CSV
    with replacing(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["folder", "title", "archive_item_pk"])
        writer.writerows(rows)
    return path


def write_job(out_dir: Path, *, archive: str, base_url: str, ca_file: Path | None, rules: Iterable[TreeRule]) -> Path:
    """``job.toml`` for the case tree under ``out_dir/cases``; returns its path."""
    lines = [
        f"# Written by `gcbulk export --archive {_toml_string(archive)}`: a case folder per archive item, a file per",
        "# socket. `gcbulk plan` reads the tree back to the same sockets; name the target reader study below before",
        "# `gcbulk run` (or set GCBULK_READER_STUDY).",
        f"{_TARGET_KEY}{_toml_string(TARGET_PLACEHOLDER)}",
        f"base_url = {_toml_string(base_url)}",
        f"case_root = {_toml_string(CASES_DIR)}",
    ]
    if ca_file is not None:
        lines.append(f"ca_file = {_toml_string(str(ca_file))}")
    lines += [
        "",
        "[cases]",
        "depth = 1",
        "# Folder names are made safe for any file system; this gives each case its item's title back.",
        f"titles_csv = {_toml_string(TITLES_CSV)}",
    ]
    for rule in rules:
        lines += ["", "[[rules]]", f"glob = {_toml_string(rule.glob)}", f"socket = {_toml_string(rule.socket)}"]
        if rule.value:
            lines.append("value = true")
        if rule.group is not None:
            lines.append(f"group = {_toml_string(rule.group)}")
    path = out_dir / JOB_FILE
    text = "\n".join(lines) + "\n"
    previous = _previous_job(path)
    if previous is not None:
        # The target a user named in the job of an earlier export stays; any other edit is kept beside it.
        chosen = next((line for line in previous.splitlines() if line.startswith(_TARGET_KEY)), None)
        if chosen is not None:
            text = text.replace(f"{_TARGET_KEY}{_toml_string(TARGET_PLACEHOLDER)}", chosen, 1)
        if previous != text:
            with replacing(out_dir / PREVIOUS_JOB_FILE, "w", encoding="utf-8") as handle:
                handle.write(previous)
    with replacing(path, "w", encoding="utf-8") as handle:
        handle.write(text)
    return path


def _previous_job(path: Path) -> str | None:
    """The job file an earlier export wrote (and its user may have edited), if there is one to keep."""
    try:
        if path.is_symlink() or path.stat().st_size > _MAX_JOB_BYTES:
            return None  # not ours (a link, or far larger than any job file): replaced, never read
        return path.read_text(encoding="utf-8")
    except (FileNotFoundError, UnicodeDecodeError):
        return None
