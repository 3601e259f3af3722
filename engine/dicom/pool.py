"""The process pool for CPU-bound DICOM work (header parses, de-identification), sized to the cores, whose workers
die with the process that made them."""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
from concurrent.futures import ProcessPoolExecutor

_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> None:
    # A worker of a run killed with -9 would otherwise finish (or hang on) its task as an orphan, racing the resumed
    # run for the same staging folder. Linux kills it with its parent; one whose parent died before this line ran
    # (it was re-parented) leaves at once.
    try:
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:
        os._exit(1)


def dicom_pool(workers: int | None = None) -> ProcessPoolExecutor:
    """A pool of ``workers`` processes (default: the cores)."""
    # "fork" by name: _die_with_parent checks that the worker's parent is this process, which holds only for forked
    # workers. Python 3.14 makes "forkserver" the default on Linux, where every worker would exit at once. (Forking
    # a process that runs threads is what 3.12+ warns about; moving to forkserver needs the parent check reworked.)
    return ProcessPoolExecutor(max_workers=workers or os.cpu_count() or 1, initializer=_die_with_parent,
                               initargs=(os.getpid(),), mp_context=multiprocessing.get_context("fork"))
