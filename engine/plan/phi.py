"""Patient identifiers in what a case sends as names: a display-set title or a DICOM image set's ``image_name``.

Two checks, both pure (they read only headers the planner already has):

* an ``image_name`` template may use a header field only when Grand Challenge's de-identification procedure keeps it
  unchanged (``engine/dicom/procedure.py``): a name built from a field the procedure removes or replaces would send
  what de-identification takes out of the files (a SeriesDescription "chest SMITH^JOHN axial");
* a title or image name that holds a PatientID or a PatientName read from the case's own DICOM headers.

Both are blocking findings; with ``allow_phi_titles`` (``--allow-phi-titles``, ``GCBULK_ALLOW_PHI_TITLES``,
``[dicom] allow_phi_titles``) they are warnings and the name is sent as it is.

Matching is on whole words, case-insensitively: a PatientID of 4 characters or more anywhere in the text (folder
names glue identifiers to other text: "MRN1234_ct"), a shorter one only as a word of its own ("p01" would otherwise
match in every title), and each part of a PatientName ("SMITH^JOHN" → "SMITH", "JOHN") of 3 letters or more as a
word of its own.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable

from gcbulk.engine.dicom.headers import DicomHeader
from gcbulk.engine.dicom.options import NAME_FIELDS
from gcbulk.engine.dicom.procedure import ACTIONS, action_for

_ANYWHERE_FROM = 4  # a PatientID this long is matched inside other text, a shorter one only as a word
_NAME_PART_FROM = 3
_NOT_HEADER_FIELDS = ("socket", "title")


def removed_fields(template: str, header: DicomHeader) -> list[str]:
    """The header fields ``template`` uses that the de-identification procedure does not keep for this series'
    SOP class, each as "SeriesDescription (the procedure removes it)"."""
    used = [name for _, name, _, _ in string.Formatter().parse(template) if name in NAME_FIELDS]
    found = []
    for name in dict.fromkeys(used):
        if name in _NOT_HEADER_FIELDS:
            continue
        action = action_for(header.sop_class_uid, name)
        if action != "K":
            found.append(f"{name} (the procedure {ACTIONS.get(action, f'applies {action!r} to')} it)")
    return found


def _word(text: str) -> re.Pattern[str]:
    return re.compile(r"(?<![0-9a-z])" + re.escape(text.casefold()) + r"(?![0-9a-z])")


def identifier_patterns(headers: Iterable[DicomHeader]) -> dict[str, list[re.Pattern[str]]]:
    """ "PatientID" / "PatientName" → the patterns that find their values (from every header given) in a name."""
    ids: set[str] = set()
    parts: set[str] = set()
    for header in headers:
        if header.patient_id.strip():
            ids.add(header.patient_id.strip())
        parts.update(p for p in re.split(r"[\^\s=,]+", header.patient_name) if len(p) >= _NAME_PART_FROM)
    found: dict[str, list[re.Pattern[str]]] = {}
    if ids:
        found["PatientID"] = [
            re.compile(re.escape(i.casefold())) if len(i) >= _ANYWHERE_FROM else _word(i) for i in sorted(ids)
        ]
    if parts:
        found["PatientName"] = [_word(p) for p in sorted(parts)]
    return found


def identifiers_in(text: str, patterns: dict[str, list[re.Pattern[str]]]) -> list[str]:
    """Which identifiers (``PatientID``, ``PatientName``) ``text`` holds."""
    folded = text.casefold()
    return [kind for kind, found in patterns.items() if any(p.search(folded) for p in found)]
