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
