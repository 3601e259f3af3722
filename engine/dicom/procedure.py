"""What Grand Challenge's de-identification procedure does to a header field, by SOP class: the procedure data the
``grand-challenge-dicom-de-identifier`` runs (locally, in gcapi and again on the server), read from its own package
(``grand_challenge_dicom_de_id_procedure``), never a hand-kept list.

An image name or title built from a field the procedure removes or replaces would carry to the server exactly what
de-identification exists to keep away (a SeriesDescription such as "chest SMITH^JOHN axial"), so the planner refuses
such a name unless the user asks for it (``engine/plan/phi.py``).
"""

from __future__ import annotations

from functools import cache

# The procedure's action codes (DICOM PS3.15 Annex E), as a finding says them.
ACTIONS = {
    "K": "keeps",
    "X": "removes",
    "Z": "empties",
    "D": "replaces with a dummy value",
    "U": "replaces with a new UID",
    "C": "cleans",
    "R": "rejects the file holding",
}


@cache
def _tag_key(keyword: str) -> str:
    from pydicom.datadict import tag_for_keyword

    tag = tag_for_keyword(keyword)
    if tag is None:
        raise ValueError(f"{keyword} is not a DICOM keyword")
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def action_for(sop_class_uid: str, keyword: str) -> str:
    """The procedure's action code for ``keyword`` in a file of ``sop_class_uid`` ("K" keeps it as it is); a SOP
    class the procedure does not list gets its default (``R``: the whole file is rejected)."""
    from grand_challenge_dicom_de_id_procedure import procedure

    sop_class = procedure["sopClass"].get(sop_class_uid)
    if sop_class is None:
        return str(procedure.get("default", "R"))
    tag = sop_class["tag"].get(_tag_key(keyword))
    return str(tag["default"] if tag is not None else sop_class.get("default", "X"))


def kept(sop_class_uid: str, keyword: str) -> bool:
    """Whether the de-identified header still holds ``keyword``'s value unchanged."""
    return action_for(sop_class_uid, keyword) == "K"
