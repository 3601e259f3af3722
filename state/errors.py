"""The ledger's exceptions; each message says what is wrong and what to do."""

from __future__ import annotations


class LedgerError(Exception):
    """A ledger cannot be used as asked; the message says why and what to do."""


class LedgerLocked(LedgerError):
    pass


class LedgerBindingError(LedgerError):
    pass


class LedgerMissing(LedgerError):
    pass


class UnknownRow(LedgerError):
    pass


class LiveUploadExists(LedgerError):
    pass


class UploadNotOpen(LedgerError):
    pass


class LedgerDamaged(LedgerError):
    """SQLite's integrity check failed, or a read met a malformed page."""


class LedgerNotALedger(LedgerError):
    """The file is not an SQLite database, or not one gcbulk wrote."""


class LedgerDiskFull(LedgerError):
    """A write found no room; nothing was half-written (SQLite rolls the transaction back)."""
