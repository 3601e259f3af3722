"""The staging budget the cases of one run share for their DICOM Image Sets, and the process pool that
de-identifies them (``engine/upload/dicom_image_set.py``)."""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor

from gcbulk.engine.dicom.options import DicomOptions
from gcbulk.engine.dicom.pool import dicom_pool
from gcbulk.engine.upload.server_limits import CountingGate

_POOL: ProcessPoolExecutor | None = None


class DicomRunState:
    """What the cases of one run share for their DICOM Image Sets: the staging budget and who holds how much of it
    (``TransferContext.dicom_image_sets``, made by the first case that stages a set)."""

    def __init__(self, options: DicomOptions, *, wait_timeout: float | None) -> None:
        self.options = options
        self.budget = CountingGate(
            options.staging_budget,
            name="DICOM staging bytes",
            why="de-identified copies are freed as their cases finish ([dicom] staging_budget)",
            wait_timeout=wait_timeout,
        )
        self.held: dict[int, int] = {}  # case id → budget bytes it holds

    def executor(self) -> ProcessPoolExecutor:
        # One pool per process, kept across runs (follow mode makes a run per poll): its workers are started once.
        global _POOL
        if _POOL is None or getattr(_POOL, "_broken", False):
            _POOL = dicom_pool(self.options.workers)
        return _POOL
