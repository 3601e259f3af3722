"""The image builds from a clean checkout: the build context, filtered by .dockerignore with Docker's own matching
rules (the docker SDK's port of moby's patternmatcher, not a matcher of ours), holds every file the Dockerfile copies
and nothing else; the runtime images receive only a finished virtual environment from the build stages."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from docker.utils.build import exclude_paths

from tests.container.test_compose_and_dockerfile import DOCKERFILE, dockerfile_instructions

REPO = Path(__file__).parents[2]
# Docker always sends these two, whatever .dockerignore says (and the SDK's exclude_paths keeps them too).
ALWAYS_SENT = {"Dockerfile", ".dockerignore"}


def context_files(root: Path) -> set[str]:
    """The files `docker build root` sends to the engine."""
    patterns = (root / ".dockerignore").read_text().splitlines()
    return {path for path in exclude_paths(str(root), patterns) if (root / path).is_file()}


def stages() -> dict[str, list[tuple[str, str]]]:
    """Each build stage's name and its instructions (FROM excluded)."""
    found: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for name, arguments in dockerfile_instructions():
        if name == "FROM":
            words = arguments.split()
            current = found.setdefault(words[words.index("AS") + 1] if "AS" in words else str(len(found)), [])
            current.append(("FROM", words[0]))
        else:
            current.append((name, arguments))
    return found


def copy_sources(stage: list[tuple[str, str]]) -> list[str]:
    """The build-context sources of a stage's COPY instructions (``COPY --from=…`` copies from another stage)."""
    sources = []
    for name, arguments in stage:
        if name == "COPY" and not arguments.startswith("--from="):
            *from_context, _destination = arguments.split()
            sources.extend(from_context)
    return sources


def all_copy_sources() -> list[str]:
    return [source for stage in stages().values() for source in copy_sources(stage)]


def copy_clean_checkout(root: Path) -> Path:
    """Copies the repository as a clone has it (git's tracked files) into ``root``, with none of this worktree's
    litter (bytecode, build state, venvs, ledgers)."""
    names = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True, timeout=60).stdout
    for name in filter(None, names.decode().split("\0")):
        source = REPO / name
        if source.is_file():
            target = root / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source.read_bytes())
    return root


@pytest.fixture(scope="module")
def clean_checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_clean_checkout(tmp_path_factory.mktemp("checkout"))


def test_every_copy_source_survives_dockerignore(clean_checkout: Path) -> None:
    sent = context_files(clean_checkout)
    for source in all_copy_sources():
        path = clean_checkout / source
        assert path.exists(), f"COPY {source}: not in a clean checkout"
        if path.is_file():
            assert source in sent, f"COPY {source}: .dockerignore drops it"
        else:
            wanted = {str(file.relative_to(clean_checkout)) for file in path.rglob("*") if file.is_file()}
            assert wanted, f"COPY {source}: an empty folder"
            assert wanted <= sent, f"COPY {source}: .dockerignore drops {sorted(wanted - sent)[:5]}"


def test_the_context_holds_nothing_the_dockerfile_does_not_copy(clean_checkout: Path) -> None:
    sent = context_files(clean_checkout)
    sources = all_copy_sources()
    extra = {path for path in sent - ALWAYS_SENT if not any(path == s or path.startswith(f"{s}/") for s in sources)}
    assert not extra, f".dockerignore lets through files no COPY uses: {sorted(extra)[:10]}"
    assert not any(part in {"tests", ".venv", ".git"} for path in sent for part in Path(path).parts)


def test_the_worktrees_own_litter_stays_out_of_the_context(tmp_path: Path) -> None:
    # What a developer's checkout holds beside the sources: bytecode, build state, a venv, a ledger.
    for litter in ("engine/__pycache__/x.cpython-311.pyc", "build/lib/x.py", "gcbulk.egg-info/PKG-INFO", ".venv/x"):
        (tmp_path / litter).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / litter).write_text("litter")
    (tmp_path / "engine" / "kept.py").write_text("")
    (tmp_path / ".dockerignore").write_text((REPO / ".dockerignore").read_text())
    assert context_files(tmp_path) == {"engine/kept.py", ".dockerignore"}


def test_the_runtime_images_get_only_the_built_environment_not_the_build_state() -> None:
    built = stages()
    assert {"build", "build-emulator", "runtime", "emulator", "gcbulk"} <= set(built)
    assert list(built)[-1] == "gcbulk", "the default target (the last stage) is gcbulk itself"
    for target, origin in (("gcbulk", "build"), ("emulator", "build-emulator")):
        copies = [arguments for name, arguments in built[target] if name == "COPY"]
        assert copies == [f"--from={origin} /opt/gcbulk /opt/gcbulk"], target
        assert not copy_sources(built[target]) and not copy_sources(built["runtime"])
        # No pip, no compiler step at run-image time: what is installed was installed in the build stage.
        assert not any(name == "RUN" and "pip" in arguments for name, arguments in built[target])


def test_the_gcbulk_image_has_no_emulator_and_no_test_extra() -> None:
    build = " ".join(arguments for name, arguments in stages()["build"] if name == "RUN")
    assert "emulator.txt" not in build.split("-r base.txt", 1)[1], "the emulator's libraries reach the gcbulk image"
    assert "['postgres']" in build and "['test']" not in build and "[test]" not in build
    emulator = " ".join(arguments for name, arguments in stages()["build-emulator"] if name == "RUN")
    assert "-r emulator.txt" in emulator


def test_only_the_long_lived_gcbulk_image_has_a_healthcheck() -> None:
    built = stages()
    assert [target for target, stage in built.items() if any(name == "HEALTHCHECK" for name, _ in stage)] == ["gcbulk"]
    assert DOCKERFILE.read_text().count("HEALTHCHECK --") == 1
