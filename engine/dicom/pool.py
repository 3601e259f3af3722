"""The process pool for CPU-bound DICOM work (header parses, de-identification), sized to the cores, whose workers
die with the process that made them."""

from __future__ import annotations

import multiprocessing
import os
import threading
from concurrent.futures import ProcessPoolExecutor
from multiprocessing.connection import wait

# What a worker runs, imported once in the fork server (not in every worker: each is forked from it with these
# loaded, as a forked worker was from the run).
_WORKER_MODULES = ["gcbulk.engine.dicom.deidentify", "gcbulk.engine.dicom.headers"]


def _leave_with_owner() -> None:
    # A worker of a run killed with -9 would otherwise finish (or hang on) its task as an orphan, racing the resumed
    # run for the same staging folder. Its parent is not always the run: under forkserver it is the fork server,
    # which outlives the run as long as any worker does (each worker holds the fd that keeps it alive), so neither
    # a changed os.getppid() nor the kernel's parent-death signal ever comes; and under fork or spawn that signal
    # follows the *thread* that started the worker, which may be a short-lived one of anyio's.
    # What holds under every start method: multiprocessing hands each worker a pipe whose other end only the process
    # that asked for it (the run) holds; it reads as closed once the run is gone, before this line ran or later.
    owner = multiprocessing.parent_process()
    if owner is None:  # not started by multiprocessing: nothing to watch
        return
    if not owner.is_alive():
        os._exit(1)
    threading.Thread(target=_exit_when_closed, args=(owner.sentinel,), name="leave-with-owner", daemon=True).start()


def _exit_when_closed(sentinel: int) -> None:
    wait([sentinel])
    os._exit(1)


def _context(start_method: str | None) -> multiprocessing.context.BaseContext:
    # Not "fork": the run forks from a process with threads (the event loop's, anyio's), which can leave a worker
    # holding a lock no thread will release; Python 3.12+ warns of it, 3.14 makes forkserver the default.
    if start_method is None:
        start_method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else None
    context = multiprocessing.get_context(start_method)
    if context.get_start_method() == "forkserver":
        # Takes effect when the fork server starts (once per process); a list, not "__main__", which would run the
        # command's script again in the server.
        context.set_forkserver_preload(_WORKER_MODULES)
    return context


def dicom_pool(workers: int | None = None, *, start_method: str | None = None) -> ProcessPoolExecutor:
    """A pool of ``workers`` processes (default: the cores), started by ``start_method`` (default: forkserver where
    the platform has it, else its default)."""
    return ProcessPoolExecutor(
        max_workers=workers or os.cpu_count() or 1, initializer=_leave_with_owner, mp_context=_context(start_method)
    )
