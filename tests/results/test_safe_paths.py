"""Server-chosen names become local file names that can never leave the export folder (engine/results/safe_paths.py)."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gcbulk.engine.results.safe_paths import (
    MAX_COMPONENT_BYTES,
    UnsafePathError,
    file_suffix,
    inside,
    relative_path,
    safe_component,
    unique_names,
)

HOSTILE = [
    "../../etc/passwd",
    "..",
    ".",
    "/absolute/path",
    "C:\\Windows\\system32",
    "a\x00b",
    "line\nbreak",
    "x" * 5000,
    "é" * 300,
    "CON",
    "nul.txt",
    "COM1",
    "lpt9.mha",
    "evil\u202egnp.exe",  # a right-to-left override that disguises the extension
    " . ",
    "",
    ".hidden",
    "trailing. ",
]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_name_becomes_one_plain_component(name: str) -> None:
    component = safe_component(name)
    assert component not in ("", ".", "..")
    assert not {"/", "\\", "\x00", "\n", "\u202e"} & set(component)
    assert not component.startswith(".") and not component.endswith((".", " "))
    assert len(component.encode()) <= MAX_COMPONENT_BYTES
    assert component.split(".")[0].upper() not in {"CON", "NUL", "COM1", "LPT9"}


def test_safe_names_are_kept_as_they_are() -> None:
    for name in ("case-001", "Corrected airway mask", "reader1", "Ünïcödé", "scan 2024.01"):
        assert safe_component(name) == name


def test_names_that_clean_to_the_same_text_stay_distinct() -> None:
    names = ["a/b", "a\\b", "a_b", "a:b", "x" * 500, "x" * 501]
    assert len({safe_component(name) for name in names}) == len(names)


def test_empty_name_uses_the_fallback() -> None:
    assert safe_component("", fallback="case").startswith("case-")


def test_unique_names_number_repeats_case_insensitively() -> None:
    assert unique_names(["Mask", "mask", "Mask", "Other"]) == ["Mask", "mask-2", "Mask-3", "Other"]


def test_file_suffix_comes_from_the_url_path_only() -> None:
    assert file_suffix("https://h/media/images/ab/cd/x/y/CT.MHA?X-Amz-Signature=a.b") == "mha"
    assert file_suffix("https://h/media/x/brain.nii.gz") == "nii.gz"
    assert file_suffix("https://h/media/x/noextension") == "bin"
    assert file_suffix("https://h/media/x/evil.m/ha") == "bin"
    assert file_suffix("https://h/media/x/file.ex;rm -rf") == "bin"


@pytest.mark.parametrize("component", ["", ".", "..", "a/b", "a\\b", "a\x00"])
def test_relative_path_refuses_anything_but_plain_names(component: str) -> None:
    with pytest.raises(UnsafePathError):
        relative_path("masks", component)


def test_inside_refuses_parent_and_absolute_paths(tmp_path: Path) -> None:
    with pytest.raises(UnsafePathError):
        inside(tmp_path, PurePosixPath("../outside"))
    with pytest.raises(UnsafePathError):
        inside(tmp_path, PurePosixPath("/etc/passwd"))


def test_inside_refuses_a_symlink_planted_to_point_out(tmp_path: Path) -> None:
    root = tmp_path / "export"
    root.mkdir()
    os.symlink(tmp_path, root / "masks")
    with pytest.raises(UnsafePathError, match="leads outside"):
        inside(root, PurePosixPath("masks/x.mha"))


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=0, max_size=400))
def test_any_server_text_lands_inside_the_folder(tmp_path_factory: pytest.TempPathFactory, name: str) -> None:
    root = tmp_path_factory.getbasetemp() / "hypothesis-root"
    root.mkdir(exist_ok=True)
    component = safe_component(name)
    target = inside(root, relative_path("masks", component, component + ".mha"))
    assert target.parent.parent.parent == root.resolve()
    assert len(component.encode()) <= MAX_COMPONENT_BYTES


def test_multi_file_image_keeps_sanitised_server_names_in_a_folder() -> None:
    from gcbulk.engine.results.masks import mask_paths

    base = PurePosixPath("masks/case-1/Mask/reader1")
    files = [
        {"file": "https://h/media/images/ab/cd/i/f/..%2F..%2Fct.mhd"},
        {"file": "https://h/media/x/../../ct.zraw"},
        {"file": "https://h/media/images/ab/cd/i/g/CON"},
    ]
    paths = [path for path, _ in mask_paths(base, files)]
    assert paths[1] == "masks/case-1/Mask/reader1/ct.zraw"
    for path in paths:
        assert PurePosixPath(path).parent == base and ".." not in PurePosixPath(path).parts
    assert mask_paths(base, files[:1])[0][0] == "masks/case-1/Mask/reader1.mhd"
