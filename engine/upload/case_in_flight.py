"""What a case's collaborators — its files (``case_files.py``), its import wait (``import_wait.py``), its DICOM image
sets (``dicom_image_set.py``) — use of the case that runs them (``case_upload.CaseUpload``): one declared interface,
so none of them reaches into the others, and none needs to import the class that holds them."""

from __future__ import annotations

from collections.abc import Callable
from typing import ParamSpec, Protocol, TypeVar

from gcbulk.engine.upload.context import TransferContext
from gcbulk.engine.upload.imports import UploadSessionIndex
from gcbulk.state.records import CaseWork
from gcbulk.state.steps import Step

P = ParamSpec("P")
T = TypeVar("T")


class CaseInFlight(Protocol):
    """One case while its steps run."""

    ctx: TransferContext
    case: CaseWork  # as last read from the ledger
    sessions: UploadSessionIndex  # the pass's index of upload sessions, for images attached without their own
    session_of: dict[str, str]  # socket → the upload session its image was sent as (this pass)
    import_units: int  # import-gate units the case holds

    async def record(self, transition: Callable[P, T], *args: P.args, **fields: P.kwargs) -> T:
        """The ledger transition, on the ledger's thread, with an event line naming the case."""
        ...

    async def record_together(self, steps: list[Step[bool]]) -> list[bool]:
        """Transitions in one ledger transaction (``Journal.record_together``)."""
        ...

    def stop_point(self, where: str) -> None:
        """Raises ``Interrupted`` when the run is stopping: the case starts nothing new."""
        ...
