"""What the code cites is in the repository: every ``docs/gc-api.md §N`` names a section that file has, and no file
points at a document a clone does not have."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).parents[2]
GC_API = REPO / "docs" / "gc-api.md"

# "docs/gc-api.md §3", "docs/gc-api.md §2, §10 path (a)", "docs/gc-api.md §3 and §9", across a comment's line break too.
CITATION = re.compile(r"docs/gc-api\.md((?:[\s#*,;/(]*(?:and|or)?[\s#*]*§\d+)+)")
SECTION_HEADING = re.compile(r"^## §(\d+) ", re.MULTILINE)

# Documents that live outside the repository and must never be cited from it (a clone does not have them).
OUTSIDE = ("gc-api-contract", "STYLE.md", "/work/shared", "../shared/", "/work/venv")
# The one legitimate occurrence: a test's hostile MetaImage header whose data file points outside its case folder.
ALLOWED = {("tests/planner/test_os_names.py", "../shared/")}
# Citations of the old name ("contract" then a section number), also across a comment's line break.
OLD_NAME = re.compile(r"\bcontract\s*(?:#\s*)?§\d+", re.IGNORECASE)


def tracked_text_files() -> list[Path]:
    """The repository's files as a clone has them (git's index), text only."""
    names = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True, timeout=60
    ).stdout.split(b"\0")
    files = []
    for name in filter(None, names):
        path = REPO / name.decode()
        if path.is_file() and path.suffix in {".py", ".md", ".toml", ".yml", ".yaml", ".txt", ".cfg", ""}:
            files.append(path)
    return files


def sections() -> set[int]:
    return {int(number) for number in SECTION_HEADING.findall(GC_API.read_text())}


def test_the_api_account_keeps_sections_0_to_11() -> None:
    # The code cites these numbers in hundreds of places: a section may grow, never be renumbered or dropped.
    assert set(range(12)) <= sections()


def test_every_cited_section_of_the_api_account_exists() -> None:
    have = sections()
    missing = []
    cited = 0
    for path in tracked_text_files():
        for match in CITATION.finditer(path.read_text(errors="replace")):
            for number in map(int, re.findall(r"§(\d+)", match.group(1))):
                cited += 1
                if number not in have:
                    line = path.read_text(errors="replace").count("\n", 0, match.start()) + 1
                    missing.append(f"{path.relative_to(REPO)}:{line} cites docs/gc-api.md §{number}")
    assert cited > 300, "the citation pattern no longer finds the code's citations"
    assert not missing, "\n".join(missing)


@pytest.mark.parametrize("outside", OUTSIDE)
def test_no_file_cites_a_document_outside_the_repository(outside: str) -> None:
    this_file = Path(__file__).resolve()
    offenders = [
        str(path.relative_to(REPO))
        for path in tracked_text_files()
        if path.resolve() != this_file
        and outside in path.read_text(errors="replace")
        and (str(path.relative_to(REPO)), outside) not in ALLOWED
    ]
    assert not offenders, f"{outside!r} is cited by {offenders}; cite docs/ (in the repository) instead"


def test_no_comment_cites_the_api_account_by_its_old_name() -> None:
    this_file = Path(__file__).resolve()
    offenders = [
        f"{path.relative_to(REPO)}: {match.group(0)!r}"
        for path in tracked_text_files()
        if path.resolve() != this_file
        for match in OLD_NAME.finditer(path.read_text(errors="replace"))
    ]
    assert not offenders, "cite 'docs/gc-api.md §N' instead:\n" + "\n".join(offenders)
