"""Display-set titles from a case folder: the job's ``cases.title`` template, or a mapping CSV (folder → title).

Titles go to the server and are what a reader sees; folder names are often patient identifiers. So a template can
pseudonymise: ``{folder|sha256:12}`` is the first 12 hex digits of the SHA-256 of the folder name. A hash of a short
identifier can be reversed by trying every identifier, so for real pseudonyms use a mapping CSV
(``cases.titles_csv``) whose titles carry no identifier at all.

Pure: no file access (the CSV is read by ``gcbulk.engine.jobfile``).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass

from natsort import natsort_keygen, ns

FIELDS = ("folder", "path", "parent")
FILTERS = ("sha256",)
_FIELD = re.compile(r"\{(?P<field>[^{}|:]*)(?:\|(?P<filter>[^{}:]*)(?::(?P<length>[^{}]*))?)?\}")


class TitleTemplateError(ValueError):
    """The template is malformed; the message says which part and what is allowed."""


@dataclass(frozen=True)
class _Part:
    text: str | None = None  # literal text, or None for a field
    field: str = ""
    filter: str | None = None
    length: int = 64


def _parse(template: str) -> tuple[_Part, ...]:
    parts: list[_Part] = []
    literal = []
    at = 0
    while at < len(template):
        if template.startswith(("{{", "}}"), at):
            literal.append(template[at])
            at += 2
            continue
        char = template[at]
        if char == "}":
            raise TitleTemplateError("a single '}' must be written '}}'")
        if char != "{":
            literal.append(char)
            at += 1
            continue
        match = _FIELD.match(template, at)
        if match is None:
            raise TitleTemplateError("a '{' opens a field that is not closed; write '{{' for a literal brace")
        field, filter_, length = match.group("field"), match.group("filter"), match.group("length")
        if field not in FIELDS:
            raise TitleTemplateError(
                f"{{{field}}} is not a field; the template may use " + ", ".join(f"{{{f}}}" for f in FIELDS)
            )
        if filter_ is not None and filter_ not in FILTERS:
            raise TitleTemplateError(f"|{filter_} is not a filter; use |sha256 or |sha256:N (N hex digits, 4–64)")
        if length is not None and (filter_ is None or not length.isdigit() or not 4 <= int(length) <= 64):
            raise TitleTemplateError(f"{{{field}|{filter_}:{length}}}: the length must be a whole number from 4 to 64")
        if literal:
            parts.append(_Part(text="".join(literal)))
            literal = []
        parts.append(_Part(field=field, filter=filter_, length=int(length) if length else 64))
        at = match.end()
    if literal:
        parts.append(_Part(text="".join(literal)))
    return tuple(parts)


def check_template(template: str) -> None:
    """Raises TitleTemplateError naming what is wrong."""
    _parse(template)


def server_title(title: str) -> str:
    """A title as the server compares it: surrounding whitespace stripped (DRF's CharField trims), Unicode NFC — so
    ``dup`` and ``dup ``, or ``café`` composed and decomposed, are one title there and must be one here."""
    return unicodedata.normalize("NFC", title.strip())


def digest(text: str, length: int = 12) -> str:
    return hashlib.sha256(text.encode("utf-8", errors="surrogateescape")).hexdigest()[:length]


def redacted(title: str) -> str:
    """What logs, events, reports and status show for a title when titles are redacted (``cases.redact_titles`` or
    ``--redact-titles``): a stable hash, so lines about one case still match up; the ledger (0600) keeps the title."""
    return f"title#{digest(title)}"


def scrub(text: str | None, *names: str) -> str | None:
    """``text`` with each of ``names`` (a title, a folder) replaced by its hash: error messages quote titles."""
    if text is None:
        return None
    for name in sorted(filter(None, names), key=len, reverse=True):
        text = text.replace(name, redacted(name))
    return text


class TitleMaker:
    """``title(rel)`` for a case folder at ``rel`` (relative to the case root, '/'-separated)."""

    def __init__(self, template: str, mapping: dict[str, str] | None = None) -> None:
        self.parts = _parse(template)
        self.mapping = mapping

    def title(self, rel: str) -> str | None:
        """The title, or None when a mapping CSV is used and has no row for this folder."""
        if self.mapping is not None:
            return self.mapping.get(rel)
        parent, _, folder = rel.rpartition("/")
        values = {"folder": folder, "path": rel, "parent": parent.rpartition("/")[2]}
        out = []
        for part in self.parts:
            if part.text is not None:
                out.append(part.text)
            elif part.filter == "sha256":
                out.append(digest(values[part.field], part.length))
            else:
                out.append(values[part.field])
        return "".join(out)


# Natural title order (``case2`` before ``case10``), case-insensitive: the order new display sets are created in
# (``engine/upload/reconcile.py``), ``reorder --by natural-title``, and the order a copy from an archive plans its
# items in: one order, so a run's display sets are already where ``reorder --by natural-title`` would put them.
natural_title_key = natsort_keygen(alg=ns.IGNORECASE)
