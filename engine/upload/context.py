"""What every transfer task shares (``TransferContext``): the client, the journal, the run's counters, and the limiters
made from ``TransferSettings``'s concurrency knobs (``engine/upload/transfer_settings.py`` says which bounds what) and
from the server's limits (``CountingGate``s, ``engine/upload/server_limits.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import anyio

from gcbulk.engine.gc.client import GrandChallengeClient
from gcbulk.engine.gc.pacer import import_policy
from gcbulk.engine.gc.targets import Target
from gcbulk.engine.upload.dicom_budget import DicomRunState
from gcbulk.engine.upload.journal import Journal
from gcbulk.engine.upload.progress import TransferStats
from gcbulk.engine.upload.server_limits import ImportPacer, UnitGate
from gcbulk.engine.upload.transfer_settings import TransferSettings


@dataclass
class TransferContext:
    client: GrandChallengeClient
    journal: Journal
    config: TransferSettings
    stats: TransferStats
    target: Target  # the reader study or archive the cases go into (engine/gc/targets.py)
    upload_gate: UnitGate
    import_gate: UnitGate
    # Set by the first stop signal: start nothing new, let what is in flight finish.
    stopping: anyio.Event = field(default_factory=anyio.Event)
    # Set when the server refused to create an upload session: values then name their uploads directly (said once).
    sessions_refused: str | None = None
    # The run's DICOM Image Set staging (budget, who holds it): made by the first case that stages a set.
    dicom_image_sets: DicomRunState | None = None
    files_limiter: anyio.CapacityLimiter = field(init=False)
    parts_limiter: anyio.CapacityLimiter = field(init=False)
    # Moves the import gate's ceiling with the server's import latency (the knob imports_in_flight is its bound).
    import_pacer: ImportPacer = field(init=False)

    def stop(self) -> None:
        """Start nothing new: set the flag every step checks, and wake whoever waits for a slot."""
        self.stopping.set()
        self.upload_gate.stop()
        self.import_gate.stop()

    def __post_init__(self) -> None:
        self.files_limiter = anyio.CapacityLimiter(self.config.files_in_flight)
        self.parts_limiter = anyio.CapacityLimiter(self.config.parts_in_flight)
        self.import_pacer = ImportPacer(
            self.import_gate, import_policy(self.config.imports_in_flight, adaptive=self.config.adaptive_concurrency)
        )
