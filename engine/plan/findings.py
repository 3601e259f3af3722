"""Findings: every problem the planner and preflight can find, each with its path and how to fix it.

The constructors below are the one place where the wording lives; ``gcbulk.engine.plan.planner`` raises the
file-level ones while it walks, and ``gcbulk.engine.plan.preflight`` the ones that need the socket catalogue, the
whole plan or the engine's part size. ``blocking`` findings stop ``gcbulk plan`` with exit 2.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from gcbulk.engine.gc.limits import (  # noqa: F401
    MAX_FILENAME,
    MAX_FILES_PER_IMAGE,
    MAX_TITLE,
    UPLOAD_CAP,
)
from gcbulk.engine.plan.parts import MAX_OBJECT_SIZE, MAX_PARTS, part_count  # noqa: F401

Severity = Literal["blocking", "warning", "info"]


@dataclass(frozen=True, slots=True)
class Finding:
    code: str
    severity: Severity
    path: str
    message: str
    fix: str
    # The files (relative to the case root) this finding keeps out of the plan; every file of the tree ends up in
    # exactly one planned item or in one finding's ``files``.
    files: tuple[str, ...] = ()
    case: str | None = None

    @property
    def blocking(self) -> bool:
        return self.severity == "blocking"

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "code": self.code,
            "severity": self.severity,
            "path": self.path,
            "message": self.message,
            "fix": self.fix,
        }
        if self.files:
            data["files"] = list(self.files)
        if self.case is not None:
            data["case"] = self.case
        return data


# Characters that change what a terminal shows rather than showing themselves: C0/C1 controls (ESC starts a terminal
# command: ESC[2J clears the screen), DEL, line/paragraph separators and the bidirectional controls (U+202E makes
# "gpj.exe" read "exe.jpg"). Names holding them are findings, and they are written escaped wherever a name is shown.
_UNSHOWABLE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_BIDI = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def shown(text: str) -> str:
    """``text`` as it can be printed, logged and stored: the one place names are made safe to render.

    Names the OS gives need not be UTF-8 (Python hands them over as lone surrogates); their bad bytes are written as
    ``\\xNN``, so nothing downstream raises UnicodeEncodeError. Control characters and bidirectional controls are
    written as ``\\xNN`` / ``\\uNNNN``, so a name cannot clear the screen or read backwards.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", errors="surrogateescape").decode("utf-8", errors="backslashreplace")
    return _UNSHOWABLE.sub(_escape, text)


def name_trouble(text: str) -> str | None:
    """Why a folder or file name cannot be shown or sent as it is, or None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid UTF-8"
    if (bidi := _BIDI.search(text)) is not None:
        return (
            f"contains a bidirectional control character (U+{ord(bidi.group()):04X}), which makes it read differently "
            "from what it is"
        )
    if _UNSHOWABLE.search(text):
        return "contains control characters (such as ESC, which a terminal runs as a command)"
    return None


def _f(
    code: str,
    severity: Severity,
    path: object,
    message: str,
    fix: str,
    files: tuple[str, ...] = (),
    case: str | None = None,
) -> Finding:
    return Finding(
        code=code,
        severity=severity,
        path=shown(str(path)),
        message=shown(message),
        fix=fix,
        files=tuple(shown(f) for f in files),
        case=None if case is None else shown(case),
    )


# --- the tree ---------------------------------------------------------------------------------------------------
def case_root_missing(path: object) -> Finding:
    return _f(
        "case-root-missing",
        "blocking",
        path,
        "the case root is not a readable folder",
        "set case_root in the job file to the folder that holds one folder per case",
    )


def outside_case(path: object, rel: str, depth: int) -> Finding:
    return _f(
        "outside-case",
        "warning",
        path,
        f"file is not inside a case folder (cases are folders at depth {depth})",
        "move it into a case folder, or delete it; it is skipped",
        (rel,),
    )


def symlink_loop(path: object, files: tuple[str, ...] = ()) -> Finding:
    return _f(
        "symlink-loop",
        "blocking",
        path,
        "symbolic link loop: following it leads back to a folder above it",
        "remove the link or point it at the real data",
        files,
    )


def unreadable(path: object, rel: str, reason: str) -> Finding:
    return _f(
        "unreadable",
        "blocking",
        path,
        f"file cannot be read: {reason}",
        "fix its permissions or the broken link, or remove it",
        (rel,),
    )


def bad_name(path: object, rel: str, reason: str) -> Finding:
    return _f(
        "bad-name",
        "blocking",
        path,
        f"file name cannot be uploaded: {reason}",
        f"rename it to a plain name of at most {MAX_FILENAME} characters (letters, digits, '-', '_', '.')",
        (rel,),
    )


def zero_bytes(path: object, rel: str) -> Finding:
    return _f(
        "zero-bytes",
        "blocking",
        path,
        "file is empty (0 bytes): Grand Challenge cannot import it",
        "replace it with the real file, or remove it",
        (rel,),
    )


def ignored(path: object, rel: str, pattern: str) -> Finding:
    return _f(
        "ignored",
        "info",
        path,
        f"ignored by the job's cases.ignore pattern {pattern!r}",
        "nothing to do; edit cases.ignore to include it",
        (rel,),
    )


def unmatched(path: object, files: tuple[str, ...], case: str) -> Finding:
    return _f(
        "unmatched",
        "warning",
        path,
        "no rule maps this file to a socket; it is skipped",
        "add a [[rules]] entry for it, add it to cases.ignore, or move it out of the case folder",
        files,
        case,
    )


def empty_case(path: object) -> Finding:
    return _f(
        "empty-case",
        "warning",
        path,
        "case folder has no files; no display set will be made for it",
        "put the case's files in it, or remove the folder",
    )


def nothing_mapped(path: object) -> Finding:
    return _f(
        "nothing-mapped",
        "warning",
        path,
        "no file in this case folder matched a rule; no display set will be made for it",
        "check the [[rules]] globs and positions against this folder's files",
    )


def missing_companion(path: object, files: tuple[str, ...], companion: str, case: str) -> Finding:
    return _f(
        "missing-companion",
        "blocking",
        path,
        f".mhd header names data file {companion!r}, which is not there",
        "put the .zraw/.raw data file next to its .mhd header (same folder, the name in ElementDataFile)",
        files,
        case,
    )


def companion_outside(path: object, files: tuple[str, ...], companion: str, case: str) -> Finding:
    return _f(
        "companion-outside",
        "blocking",
        path,
        f".mhd header names data file {companion!r}, which points outside the case folder",
        "copy the data file into the case folder next to the .mhd and set ElementDataFile to its bare name",
        files,
        case,
    )


def same_case_folder(path: object, rel: str, first: str) -> Finding:
    return _f(
        "same-case-folder",
        "warning",
        path,
        f"this is the same folder as case {first!r} (same device and inode: a symbolic link or a bind mount); "
        "it is planned once, as that case",
        "nothing to do; remove the link (or add it to cases.ignore) to silence this",
        (),
        rel,
    )


def bad_folder_name(path: object, rel: str, files: tuple[str, ...], trouble: str = "is not valid UTF-8") -> Finding:
    if trouble == "is not valid UTF-8":
        message = f"case folder name is not valid UTF-8 (shown with its bad bytes as \\xNN: {rel})"
        fix = "rename the folder to UTF-8 (e.g. convmv -f latin1 -t utf8 --notest), then plan again"
    else:
        message = f"case folder name {trouble} (shown escaped: {rel})"
        fix = "rename the folder to plain printable characters, then plan again"
    return _f("bad-name", "blocking", path, f"{message}; it cannot be a display set title", fix, files, rel)


def case_alias(path: object, rel: str, real: str) -> Finding:
    return _f(
        "case-alias",
        "warning",
        path,
        f"this is a symbolic link to case folder {real!r}; a case is its real folder, so the link is skipped and "
        f"{real!r} is planned as itself",
        "nothing to do; remove the link (or add it to cases.ignore) to silence this",
        (),
        rel,
    )


def link_outside_case(path: object, rel: str, case: str) -> Finding:
    return _f(
        "link-outside-case",
        "blocking",
        path,
        "file is a symbolic link to a file outside its case folder; gcbulk sends only files inside their case",
        "copy the file into the case folder in place of the link",
        (rel,),
        case,
    )


def folder_link_outside_case(path: object, rel: str, case: str) -> Finding:
    return _f(
        "link-outside-case",
        "warning",
        path,
        "folder is a symbolic link to a folder outside its case folder; it is not followed and nothing in it is sent",
        "copy the folder into the case folder in place of the link if its files belong to the case",
        (),
        case,
    )


def bad_image_header(path: object, files: tuple[str, ...], reason: str, case: str) -> Finding:
    return _f(
        "bad-image-header",
        "blocking",
        path,
        f"image header would be refused by Grand Challenge's importer: {reason}",
        "re-export the image (e.g. with SimpleITK's WriteImage) so its header and its data agree",
        files,
        case,
    )


def mha_data_elsewhere(path: object, files: tuple[str, ...], data_file: str, case: str) -> Finding:
    return _f(
        "mha-data-elsewhere",
        "blocking",
        path,
        f".mha header names data file {data_file!r} (ElementDataFile); an .mha is sent alone and must carry its "
        "voxels itself (ElementDataFile = LOCAL)",
        "re-export it as a single .mha (e.g. with SimpleITK's WriteImage), or as .mhd next to its data file",
        files,
        case,
    )


def check_budget(path: object, rel: str, socket: str, reason: str, case: str) -> Finding:
    return _f(
        "check-budget",
        "blocking",
        path,
        f"the content check of the file for socket {socket!r} stopped: {reason}; it was not checked and is not sent",
        "make the image smaller (crop or split it), or plan with --no-content-checks to leave the check to Grand "
        "Challenge (after the upload)",
        (rel,),
        case,
    )


def grid_mismatch(path: object, rel: str, socket: str, image: str, image_socket: str, what: str, case: str) -> Finding:
    return _f(
        "grid-mismatch",
        "warning",
        path,
        f"segmentation {rel!r} (socket {socket!r}) does not lie on the grid of image {image!r} (socket "
        f"{image_socket!r}) in the same case: {what}; a viewer overlays it in the wrong place",
        "resample the segmentation onto its image's grid (size, spacing, origin and direction)",
        (),
        case,
    )


def missing_required(path: object, socket: str, rule: str, case: str) -> Finding:
    return _f(
        "missing-required",
        "blocking",
        path,
        f"no file for required socket {socket!r} ({rule}); the case would be incomplete",
        "add the file to the case folder, fix the rule's pattern, or drop required = true for that socket",
        (),
        case,
    )


def position_names_differ(rule: str, counts: str, suggestion: str) -> Finding:
    return _f(
        "position-names-differ",
        "warning",
        rule,
        f"{rule} takes files of different names in different cases ({counts}); a position follows the order "
        "of the names, so a case whose files are named differently sends them to the wrong socket",
        f"map by name instead: replace position with a name pattern, e.g. {suggestion}",
    )


def position_name_mismatch(rule: str, name: str, cases: int, other: str) -> Finding:
    return _f(
        "position-name-mismatch",
        "warning",
        rule,
        f"{rule} sends {name!r} ({cases} case{'s' if cases != 1 else ''}), whose name looks like socket "
        f"{other!r}: the file names sort in another order than the positions assume",
        f"map by name instead of position, e.g. glob = {name!r} with socket = {other!r}",
    )


def schema_mismatch(path: object, rel: str | None, socket: str, kind: str, reason: str, case: str) -> Finding:
    return _f(
        "schema-mismatch",
        "blocking",
        path,
        f"the value for socket {socket!r} does not fit its kind {kind!r}: {reason}; Grand Challenge would refuse "
        "it (a JSON file silently: the value never appears)",
        f"fix the JSON so it is a valid {kind!r} value",
        (rel,) if rel else (),
        case,
    )


def unreadable_image(path: object, rel: str, socket: str, reason: str, case: str) -> Finding:
    return _f(
        "unreadable-image",
        "blocking",
        path,
        f"image for socket {socket!r} cannot be read by the importer: {reason}",
        "re-export the image (e.g. as .mha with SimpleITK), or map a different file to the socket",
        (rel,),
        case,
    )


def bad_segmentation(path: object, rel: str, socket: str, reason: str, case: str) -> Finding:
    return _f(
        "bad-segmentation",
        "blocking",
        path,
        f"segmentation for socket {socket!r} would be refused by Grand Challenge: {reason}",
        "write the mask as single-channel uint8 with only the socket's overlay values (and 0), or add the "
        "values to the socket's overlay_segments on Grand Challenge",
        (rel,),
        case,
    )


def no_title_row(path: object, rel: str, csv_path: str) -> Finding:
    return _f(
        "no-title",
        "blocking",
        path,
        f"case folder {rel!r} has no row in cases.titles_csv {csv_path}",
        "add a row 'folder,title' for it to the CSV (the title must not identify the patient), or move the "
        "folder out of the case root",
    )


def not_dicom(path: object, rel: str, reason: str, case: str) -> Finding:
    return _f(
        "not-dicom",
        "blocking",
        path,
        f"rule groups DICOM series, but this file is not DICOM: {reason}",
        "remove it from the case folder, or narrow the rule's glob/regex to the DICOM files",
        (rel,),
        case,
    )


def bad_json(path: object, rel: str, reason: str, case: str) -> Finding:
    return _f(
        "bad-json",
        "blocking",
        path,
        f"value file is not valid JSON: {reason}",
        "fix the JSON (it becomes the socket's value)",
        (rel,),
        case,
    )


def two_file_sets(path: object, socket: str, sets: int, files: tuple[str, ...], case: str) -> Finding:
    return _f(
        "two-file-sets",
        "blocking",
        path,
        f"{sets} separate file sets map to socket {socket!r} in this case; a socket is unique within a display "
        "set and each image value must be exactly one image",
        "narrow the rules so one file (or one .mhd pair, or one DICOM series) maps to the socket, group the "
        'files with group = "dicom-series", or split the case',
        files,
        case,
    )


def too_many_files(path: object, socket: str, count: int, files: tuple[str, ...], case: str) -> Finding:
    return _f(
        "too-many-files",
        "blocking",
        path,
        f"{count} files for socket {socket!r}; one image value takes at most {MAX_FILES_PER_IMAGE} files",
        "convert the series to a single .mha/.tif, or split it",
        files,
        case,
    )


def duplicate_file_names(path: object, socket: str, name: str, files: tuple[str, ...], case: str) -> Finding:
    return _f(
        "duplicate-names",
        "blocking",
        path,
        f"two files named {name!r} go to socket {socket!r}; file names must be unique within one value",
        "rename one of them",
        files,
        case,
    )


def bad_title(path: object, title: str, reason: str) -> Finding:
    return _f(
        "bad-title",
        "blocking",
        path,
        f"display set title {title!r} {reason}",
        "change cases.title in the job file, or rename the folder",
    )


# --- the job, the catalogue and the whole plan ------------------------------------------------------------------
def unknown_socket(job_file: object, where: str, slug: str, base_url: str) -> Finding:
    return _f(
        "unknown-socket",
        "blocking",
        job_file,
        f"{where}: socket {slug!r} does not exist on {base_url}",
        "correct the slug (see the socket list on Grand Challenge), or create the socket first",
    )


def wrong_socket_kind(job_file: object, where: str, slug: str, super_kind: str, expected: str) -> Finding:
    return _f(
        "wrong-socket-kind",
        "blocking",
        job_file,
        f"{where}: socket {slug!r} is a {super_kind} socket, but the job gives it {expected}",
        "map files to Image/File sockets and JSON values (value = true or [values]) to Value sockets",
    )


def file_socket_many_files(path: object, slug: str, count: int, case: str) -> Finding:
    return _f(
        "file-socket-many-files",
        "blocking",
        path,
        f"{count} files map to file socket {slug!r}; a file socket takes exactly one file",
        "narrow the rule to one file per case",
        (),
        case,
    )


def duplicate_title(path: object, title: str) -> Finding:
    return _f(
        "duplicate-title",
        "blocking",
        path,
        f"display set title {title!r} is already used by another case folder (as the server compares titles: surrounding spaces removed, Unicode NFC); titles identify display sets "
        "and must be unique in the reader study",
        'rename one folder, or change cases.title so it includes more of the path (e.g. "{path}")',
    )


# The code of a case blocked because the study has a display set of its title that this job did not make: the one
# block a newer listing of the study can lift.
TITLE_TAKEN = "title-exists"


def title_taken(path: object, title: str, pk: str) -> Finding:
    return _f(
        TITLE_TAKEN,
        "blocking",
        path,
        f"the reader study already has a display set titled {title!r} (pk {pk}) that this job did not make; gcbulk never "
        "takes over a display set that is not its own",
        "rename the case folder (or change cases.title), or, if that display set is this case's, plan and run "
        "with --adopt-existing (it fills only sockets without a value and never touches a display set that "
        "has answers)",
    )


def too_many_parts(path: object, size: int, preferred: int, grown: int | None) -> Finding:
    if grown is None:
        return _f(
            "too-many-parts",
            "blocking",
            path,
            f"file of {size} bytes is over S3's 5 TiB object limit; it cannot be uploaded",
            "split or compress the file",
        )
    return _f(
        "too-many-parts",
        "warning",
        path,
        f"at engine.part_size {preferred} bytes the file needs {part_count(size, preferred)} parts "
        f"(limit {MAX_PARTS}); its parts will be {grown} bytes, so memory per part in flight grows to match",
        "raise engine.part_size to silence this, or lower engine.parts_in_flight if memory is tight",
    )


# --- DICOM (gcbulk.engine.plan.dicom_case) ------------------------------------------------------------------------
def dicom_series_unmapped(path: object, described: str, fields: str, files: tuple[str, ...], case: str) -> Finding:
    return _f(
        "dicom-series-unmapped",
        "warning",
        path,
        f"DICOM {described} matches no rule ({fields}); it is skipped",
        "add a [[rules]] entry with dicom = { Modality = … } for it, or move it out of the case folder",
        files,
        case,
    )


def dicom_multi_series(path: object, folder: str, described: str, case: str) -> Finding:
    return _f(
        "dicom-multi-series",
        "info",
        path,
        f"folder {folder or '(the case folder)'!r} holds several DICOM series: {described}",
        "nothing to do when the rules map each series; otherwise add dicom rules by Modality or SeriesDescription",
        (),
        case,
    )


def dicom_mixed_studies(path: object, described: str, case: str) -> Finding:
    return _f(
        "dicom-mixed-studies",
        "warning",
        path,
        f"this case holds DICOM series of {described}; one display set then mixes studies",
        "check that the studies belong to one case; otherwise split the case folder by study",
        (),
        case,
    )


def dicom_image_set(path: object, code: str, socket: str, message: str, files: tuple[str, ...], case: str) -> Finding:
    return _f(
        code,
        "blocking",
        path,
        f"the DICOM files for socket {socket!r} would be refused by Grand Challenge, silently (docs/gc-api.md §10): "
        f"{message}",
        "split the files so each image set is one series of one study of one patient, and remove files the "
        "de-identifier rejects (structured reports, presentation states, …) from the case folder",
        files,
        case,
    )


def dicom_image_name_empty(path: object, socket: str, template: str, files: tuple[str, ...], case: str) -> Finding:
    return _f(
        "dicom-image-name-empty",
        "blocking",
        path,
        f"the image name for socket {socket!r} comes out empty (image_name = {template!r} on this series' "
        "headers); a DICOM Image Set needs a non-empty image_name",
        'change image_name in the rule for that socket, e.g. "{socket}" or "{title} {Modality}"',
        files,
        case,
    )


# --- patient identifiers in names (engine/plan/phi.py) -----------------------------------------------------------
_PHI_FIX = (
    "rename the case folder (or its row in cases.titles_csv) so it holds no patient identifier; if it must, pass "
    "--allow-phi-titles (or GCBULK_ALLOW_PHI_TITLES=1, or allow_phi_titles = true in [dicom])"
)


def phi_in_name(
    path: object, what: str, kinds: list[str], allowed: bool, case: str, files: tuple[str, ...] = ()
) -> Finding:
    """``what``: "title 'x'" or "image name for socket 'y' (image_name = ...)": never the identifier itself."""
    return _f(
        "phi-in-name",
        "warning" if allowed else "blocking",
        path,
        f"the {what} holds the {' and '.join(kinds)} read from this case's DICOM headers; Grand Challenge "
        "would show it to everyone who sees the study" + (" (sent as it is: --allow-phi-titles)" if allowed else ""),
        _PHI_FIX,
        files,
        case,
    )


def image_name_not_deidentified(
    path: object, socket: str, template: str, fields: list[str], allowed: bool, files: tuple[str, ...], case: str
) -> Finding:
    return _f(
        "image-name-not-deidentified",
        "warning" if allowed else "blocking",
        path,
        f"the image name for socket {socket!r} (image_name = {template!r}) uses {', '.join(fields)}: Grand "
        "Challenge's de-identification procedure does not keep that field, as it may identify the patient"
        + (" (sent from the original header: --allow-phi-titles)" if allowed else ""),
        'build image_name from fields the procedure keeps: "{socket}", "{title}", "{Modality}"; or pass '
        "--allow-phi-titles to send the original value",
        () if allowed else files,
        case,
    )
