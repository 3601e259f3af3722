"""CSV cells that a spreadsheet will not run: a cell that begins with ``=``, ``+``, ``-``, ``@``, a tab or a carriage
return is read by Excel, LibreOffice and Google Sheets as a formula (CSV injection, OWASP), so such a cell gets a
leading apostrophe — what those tools themselves use to mark "text, not a formula", and what OWASP recommends.

A plain number (``-3``, ``+1.5e3``) is left as it is: it cannot call anything, and escaping it would turn every
negative measurement into text. Escaping happens only at the CSV writer; the JSON outputs keep the exact values.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping
from typing import IO, TYPE_CHECKING, Any

_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _is_plain_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return text.strip() == text and text.lower().lstrip("+-") not in ("inf", "infinity", "nan")


def spreadsheet_safe(value: Any) -> Any:
    """``value`` as it may go into a CSV cell: strings that a spreadsheet would run are prefixed with ``'``."""
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS) and not _is_plain_number(value):
        return "'" + value
    return value


class SafeCsvWriter:
    """``csv.writer`` whose every cell passes :func:`spreadsheet_safe`."""

    def __init__(self, handle: IO[str], **options: Any) -> None:
        self._writer = csv.writer(handle, **options)

    def writerow(self, row: Iterable[Any]) -> Any:
        return self._writer.writerow([spreadsheet_safe(cell) for cell in row])


if TYPE_CHECKING:  # csv.DictWriter is generic for type checkers only before Python 3.12
    _DictWriter = csv.DictWriter[str]
else:
    _DictWriter = csv.DictWriter


class SafeDictWriter(_DictWriter):
    """``csv.DictWriter`` whose every cell passes :func:`spreadsheet_safe` (the header is ours and left as it is)."""

    def writerow(self, rowdict: Mapping[str, Any]) -> Any:
        return super().writerow({key: spreadsheet_safe(value) for key, value in rowdict.items()})
