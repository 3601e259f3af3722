"""De-identification before upload, with Grand Challenge's own de-identifier and procedure (the code gcapi runs and
the server runs again), into a private staging folder, resumably.

One image set is staged as a unit, by one ``DicomDeidentifier``: it maps each original UID to a new one and keeps
that map, so every file of the set gets the same new Study and Series Instance UIDs. Staging a set half before a
crash and half after, with two deidentifiers, would split it into two series — which the server refuses, silently.
So a set is written to ``<key>.partial/`` and renamed to ``<key>/`` only when whole, with a manifest of its sources
(a digest of each path, size, mtime; never the path) and of the staged files (size, SHA-256), all 0600: a resume reuses a staged set whose sources did not change, and
redoes one whose sources did. Staged files are named ``dicom_image_<n>.dcm`` as gcapi names them: the originals'
names may carry identifiers too.

CPU-bound (pydicom parses and rewrites every element), so many sets go through a process pool sized to the cores.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO

from gcbulk.engine.dicom.pool import dicom_pool

MANIFEST = "manifest.json"
_HASH_CHUNK = 1024 * 1024


class StagingError(Exception):
    """A set could not be staged: a file the de-identifier rejects, or the disk budget; the message names it."""


@dataclass(frozen=True)
class StagedFile:
    source: str
    source_size: int
    source_mtime_ns: int
    staged: str  # the staged file's name inside the set's folder
    size: int
    sha256: str


@dataclass(frozen=True)
class StagedSet:
    key: str
    folder: Path
    files: tuple[StagedFile, ...]
    reused: bool = False

    @property
    def bytes(self) -> int:
        return sum(f.size for f in self.files)

    def paths(self) -> list[Path]:
        return [self.folder / f.staged for f in self.files]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _path_digest(path: str) -> str:
    return hashlib.sha256(os.fsencode(path)).hexdigest()


def _private(path: Path) -> BinaryIO:
    """A new file only its owner may read (0600 whatever the umask): staged copies are still patient data until the
    server holds them, and the staging folder may sit on a shared disk."""
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb")


def _safe_key(key: str) -> str:
    # Keys are ledger ids or hashes; refuse anything that could leave the staging folder.
    if not key or "/" in key or "\\" in key or key.startswith(".") or key in ("..",):
        raise ValueError(f"staging key {key!r} must be a plain name")
    return key


def _load_staged(folder: Path, key: str, sources: list[str]) -> StagedSet | None:
    """The set as staged before, if its manifest is whole and every source is as it was then."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        entries = manifest["files"]
        if [entry.pop("source_digest") for entry in entries] != [_path_digest(source) for source in sources]:
            return None
        files = tuple(StagedFile(source=source, **entry) for source, entry in zip(sources, entries, strict=True))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    for staged in files:
        try:
            stat = os.stat(staged.source)
            size_now = (folder / staged.staged).stat().st_size
        except OSError:
            return None
        if (stat.st_size, stat.st_mtime_ns) != (staged.source_size, staged.source_mtime_ns) or size_now != staged.size:
            return None
        if _sha256(folder / staged.staged) != staged.sha256:  # changed on disk: never send it, stage it again
            return None
    return StagedSet(key, folder, files, reused=True)


def stage_set(key: str, sources: list[str], staging_root: Path) -> StagedSet:
    """De-identifies ``sources`` (one image set, in slice order) into ``staging_root/key/``; reuses a whole earlier
    staging of the same, unchanged sources. Raises StagingError naming a file the de-identifier rejects."""
    from grand_challenge_dicom_de_identifier.deidentifier import DicomDeidentifier
    from grand_challenge_dicom_de_identifier.exceptions import RejectedDICOMFileError

    key = _safe_key(key)
    staging_root.mkdir(parents=True, exist_ok=True, mode=0o700)
    folder = staging_root / key
    if folder.is_dir():
        earlier = _load_staged(folder, key, sources)
        if earlier is not None:
            return earlier
        shutil.rmtree(folder)
    partial = staging_root / f"{key}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(mode=0o700)
    deidentifier = DicomDeidentifier()  # one per set: its UID map is what keeps the set one series
    staged = []
    for index, source in enumerate(sources):
        stat = os.stat(source)
        name = f"dicom_image_{index}.dcm"
        target = partial / name
        try:
            with _private(target) as output:
                deidentifier.deidentify_file(file=source, output=output)
        except RejectedDICOMFileError as exc:
            shutil.rmtree(partial, ignore_errors=True)
            raise StagingError(f"{source}: Grand Challenge's de-identifier rejects it: {exc.justification}") from None
        except Exception as exc:  # pydicom raises many kinds on a damaged file; each means "cannot send this"
            shutil.rmtree(partial, ignore_errors=True)
            raise StagingError(f"{source}: could not be de-identified ({type(exc).__name__}: {exc})") from None
        staged.append(StagedFile(source, stat.st_size, stat.st_mtime_ns, name, target.stat().st_size, _sha256(target)))
    # No source path in the manifest: a PACS export's paths often carry patient names, and a run killed before the
    # set reached the server leaves the manifest behind. A digest of the path is enough to know the sources again.
    entries = [
        {"source_digest": _path_digest(f.source), **{k: v for k, v in asdict(f).items() if k != "source"}}
        for f in staged
    ]
    with _private(partial / MANIFEST) as handle:
        handle.write(json.dumps({"key": key, "files": entries}).encode())
    os.replace(partial, folder)  # the set appears whole or not at all
    return StagedSet(key, folder, tuple(staged))


def release(staging_root: Path, key: str) -> None:
    """Frees a set's staging space once Grand Challenge holds its uploads."""
    shutil.rmtree(staging_root / _safe_key(key), ignore_errors=True)


def _stage_one(job: tuple[str, list[str], str]) -> StagedSet | StagingError:
    key, sources, root = job
    try:
        return stage_set(key, sources, Path(root))
    except StagingError as exc:
        return exc


def stage_sets(
    sets: Iterable[tuple[str, list[str]]], staging_root: Path, *, budget_bytes: int, workers: int | None = None
) -> Iterator[StagedSet | StagingError]:
    """Stages many sets in a process pool, in order, never holding more than ``budget_bytes`` of sources in flight
    (staged files are about the size of their sources). A set larger than the budget alone is a StagingError."""
    workers = workers or os.cpu_count() or 1
    pending = list(sets)
    with dicom_pool(workers) as pool:
        in_flight: list[tuple[int, object]] = []
        held = 0
        for key, sources in pending:
            size = sum(os.stat(s).st_size for s in sources)
            if size > budget_bytes:
                yield StagingError(
                    f"image set {key} has {size} bytes of DICOM, more than the staging budget of "
                    f"{budget_bytes} bytes; raise the budget"
                )
                continue
            while in_flight and held + size > budget_bytes:
                done_size, future = in_flight.pop(0)
                held -= done_size
                yield future.result()  # type: ignore[attr-defined]
            in_flight.append((size, pool.submit(_stage_one, (key, sources, str(staging_root)))))
            held += size
        for _, future in in_flight:
            yield future.result()  # type: ignore[attr-defined]
