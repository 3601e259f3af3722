"""The container image's lock (constraints.txt) agrees with pyproject.toml, and the Dockerfile installs from it."""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).parents[2]


def pins() -> dict[str, Version]:
    found: dict[str, Version] = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, _, version = line.partition("==")
        assert version, f"constraints.txt: {line!r} is not an exact pin (name==version)"
        key = canonicalize_name(name)
        assert key not in found, f"constraints.txt pins {name} twice"
        found[key] = Version(version)
    return found


def runtime_requirements() -> list[Requirement]:
    """The base dependencies and the two runtime extras (the image installs the base, or the base with the emulator
    extra for the emulator's target, and the postgres extra for the scale-out workers): all locked together."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    return [Requirement(text) for text in [*project["dependencies"], *extras["emulator"], *extras["postgres"]]]


def test_every_runtime_dependency_is_pinned_within_its_range_in_the_lock() -> None:
    locked = pins()
    for requirement in runtime_requirements():
        if requirement.marker and not requirement.marker.evaluate(default_environment()):
            continue
        key = canonicalize_name(requirement.name)
        assert key in locked, f"{requirement.name} is in pyproject.toml but not pinned in constraints.txt"
        assert requirement.specifier.contains(locked[key], prereleases=True), (
            f"constraints.txt pins {requirement.name}=={locked[key]}, outside pyproject.toml's {requirement.specifier}"
        )


def test_runtime_dependencies_have_an_upper_bound_where_a_major_release_breaks() -> None:
    bounded = {canonicalize_name(r.name) for r in runtime_requirements() if any(s.operator == "<" for s in r.specifier)}
    assert {"aiohttp", "anyio", "sqlite-utils", "pydicom", "numpy"} <= bounded


def test_the_lock_carries_no_test_only_packages() -> None:
    # gcapi 0.16.1 pins old httpx/h11; acceptable in the test extras, never in the image.
    assert not {"gcapi", "httpx", "h11", "pytest", "moto"} & set(pins())


def test_the_dockerfile_installs_from_the_lock() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "constraints.txt" in dockerfile.split("COPY pyproject.toml", 1)[1].split("\n", 1)[0]
    installs = [line for line in dockerfile.splitlines() if "pip install" in line]
    assert installs and all("-c constraints.txt" in line for line in installs)
