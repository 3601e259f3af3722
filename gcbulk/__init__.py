"""gcbulk: resumable bulk transfers of medical-imaging datasets into and out of Grand Challenge reader studies.

The command line (``gcbulk``) is a thin layer over this API::

    import gcbulk

    job = gcbulk.Job("job.toml")
    job.plan(dry_run=True).findings
    job.run()
    gcbulk.ReaderStudy("my-study").answers()
    gcbulk.Archive("my-archive").export("cases-out/")

``gcbulk.engine`` does the work (planner, Grand Challenge client, upload path, results side, long-lived service, CLI),
``gcbulk.state`` remembers it (the ledger and its state machines) and ``gcbulk.emulator`` is the Grand Challenge
stand-in used by the demo and the tests (installed with ``gcbulk[emulator]``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = [
    "Archive",
    "CaseResult",
    "ConfigurationError",
    "GcbulkError",
    "Job",
    "PlanBlocked",
    "PlanReport",
    "ReaderStudy",
    "RunOutcome",
    "VerifyResult",
    "__version__",
    "copy",
]

if TYPE_CHECKING:
    from gcbulk.engine.api import CaseResult, Job, PlanReport, ReaderStudy, RunOutcome, VerifyResult, copy
    from gcbulk.engine.archive_api import Archive
    from gcbulk.engine.gc.errors import ConfigurationError, GcbulkError
    from gcbulk.engine.service.job_service import PlanBlocked

# Loaded on first use: `import gcbulk` (and the `gcbulk` command, which imports this package) stays cheap, with no
# aiohttp or SimpleITK until a job actually runs.
_LAZY = {
    "Job": "gcbulk.engine.api",
    "ReaderStudy": "gcbulk.engine.api",
    "copy": "gcbulk.engine.api",  # gcbulk copy: display sets / archive items into another study or archive
    "Archive": "gcbulk.engine.archive_api",
    "ConfigurationError": "gcbulk.engine.gc.errors",
    "GcbulkError": "gcbulk.engine.gc.errors",
    "PlanBlocked": "gcbulk.engine.service.job_service",
    # What Job.plan(), Job.run() and Job.verify() return.
    "PlanReport": "gcbulk.engine.api",
    "RunOutcome": "gcbulk.engine.api",
    "CaseResult": "gcbulk.engine.api",
    "VerifyResult": "gcbulk.engine.api",
}


def _version() -> str:
    # Read on first use, not at import: importlib.metadata scans the installed distributions, and every `gcbulk`
    # command imports this package before it can catch a Ctrl-C.
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("gcbulk")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0+unknown"


def __getattr__(name: str) -> Any:
    if name == "__version__":
        return _version()
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'gcbulk' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
