"""The job file's DICOM settings: header-field rules (``dicom = {Modality = "CT"}``), the image name of a DICOM Image
Set value, and the ``[dicom]`` table (de-identification, staging folder and its disk budget). Pure: no I/O but the
staging folder's path.

A DICOM Image Set socket needs a non-empty ``image_name`` besides its files (docs/gc-api.md §10); it is rendered from a
template on the series' header fields, the same way at plan time (where an empty name is a blocking finding) and at
run time (where it is sent), so nothing but the template needs to be remembered between the two.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

GiB = 1024**3

# Header fields a rule may match on (globs, case-insensitive) and an image name may use: ``DicomHeader.field``.
HEADER_FIELDS = (
    "Modality",
    "SeriesDescription",
    "SeriesNumber",
    "PatientID",
    "SOPClassUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
)
# PatientID is matchable (to route a known phantom, say) but never part of a name Grand Challenge would show; of the
# header fields a name may use, only those the de-identification procedure keeps pass plan (engine/plan/phi.py).
NAME_FIELDS = ("socket", "title", "Modality", "SeriesDescription", "SeriesNumber")
DEFAULT_IMAGE_NAME = "{socket}"
DEFAULT_STAGING_BUDGET = 4 * GiB


class DicomOptionError(ValueError):
    """A DICOM setting of the job file is wrong; the message names the key and what to write instead."""


@dataclass(frozen=True, kw_only=True)
class DicomOptions:
    """``[dicom]``: what the run does with DICOM Image Set values."""

    # Off only for data that is already de-identified: then the files are sent exactly as they are on disk.
    deidentify: bool = True
    staging: Path | None = None  # None: next to the job file, "<job>.dicom-staging"
    staging_budget: int = DEFAULT_STAGING_BUDGET  # bytes of staged files on disk at once
    workers: int | None = None  # processes for header reads and de-identification; None: the cores
    image_names: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))  # socket → template
    # Send a title or image name that holds a patient identifier (or a field de-identification removes) as it is,
    # with a warning, instead of blocking its case (engine/plan/phi.py). For users who must.
    allow_phi_titles: bool = False

    def image_name_template(self, socket: str) -> str:
        return self.image_names.get(socket, DEFAULT_IMAGE_NAME)


def render_image_name(template: str, header: Any, *, socket: str, title: str) -> str:
    """The image name for a series whose first file's header is ``header`` (a ``DicomHeader``); stripped."""
    values = {"socket": socket, "title": title}
    values.update({name: header.field(name) for name in NAME_FIELDS if name not in values})
    return " ".join(template.format_map(values).split())


def check_image_name(template: object, where: str) -> str:
    if not isinstance(template, str):
        raise DicomOptionError(f'{where}: image_name must be a string such as "{{title}} {{Modality}}"')
    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:
        raise DicomOptionError(f"{where}: image_name {template!r} is not a valid template ({exc})") from None
    unknown = [name for name in fields if name not in NAME_FIELDS]
    if unknown:
        raise DicomOptionError(
            f"{where}: image_name {template!r} uses {{{unknown[0]}}}; the fields it may use are "
            + ", ".join(f"{{{n}}}" for n in NAME_FIELDS)
        )
    return template


def check_criteria(raw: object, where: str) -> Mapping[str, str]:
    """A rule's ``dicom = {Field = "glob", …}`` table."""
    if not isinstance(raw, Mapping):
        raise DicomOptionError(f'{where}: dicom must be a table of header fields, e.g. dicom = {{ Modality = "CT" }}')
    criteria = {}
    for name, pattern in raw.items():
        if name not in HEADER_FIELDS:
            raise DicomOptionError(
                f"{where}: dicom.{name} is not a header field gcbulk reads; use one of " + ", ".join(HEADER_FIELDS)
            )
        if isinstance(pattern, bool) or not isinstance(pattern, str | int):
            raise DicomOptionError(f'{where}: dicom.{name} must be a string (a glob such as "*lung*") or a number')
        criteria[name] = str(pattern)
    return MappingProxyType(criteria)


def parse_dicom_table(raw: object, job_file: Path, image_names: Mapping[str, str], parse_size: Any) -> DicomOptions:
    """The ``[dicom]`` table; ``image_names`` come from the rules (socket → template)."""
    if not isinstance(raw, Mapping):
        raise DicomOptionError(f"{job_file}: [dicom] must be a table")
    known = {"deidentify", "staging", "staging_budget", "workers", "allow_phi_titles"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise DicomOptionError(
            f"{job_file}: unknown key dicom.{unknown[0]}; the keys allowed there are " + ", ".join(sorted(known))
        )
    deidentify = raw.get("deidentify", True)
    if not isinstance(deidentify, bool):
        raise DicomOptionError(
            f"{job_file}: dicom.deidentify must be true or false (false sends the files as they "
            "are: only for data that is already de-identified)"
        )
    allow_phi_titles = raw.get("allow_phi_titles", False)
    if not isinstance(allow_phi_titles, bool):
        raise DicomOptionError(
            f"{job_file}: dicom.allow_phi_titles must be true or false (true sends titles and image names that hold "
            "patient identifiers, with a warning)"
        )
    staging = raw.get("staging")
    if staging is not None and (not isinstance(staging, str) or not staging):
        raise DicomOptionError(f"{job_file}: dicom.staging must be the path of a folder for de-identified copies")
    budget = parse_size("dicom.staging_budget", raw.get("staging_budget", DEFAULT_STAGING_BUDGET))
    if budget < 1:
        raise DicomOptionError(f'{job_file}: dicom.staging_budget must be more than 0 bytes, e.g. "4 GiB"')
    workers = raw.get("workers")
    if workers is not None and (not isinstance(workers, int) or isinstance(workers, bool) or workers < 1):
        raise DicomOptionError(f"{job_file}: dicom.workers must be a whole number of at least 1")
    return DicomOptions(
        deidentify=deidentify,
        staging=(job_file.parent / staging).resolve()
        if staging
        else job_file.with_name(f"{job_file.stem}.dicom-staging"),
        staging_budget=budget,
        workers=workers,
        image_names=MappingProxyType(dict(image_names)),
        allow_phi_titles=allow_phi_titles,
    )
