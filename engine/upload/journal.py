"""Each state change the engine makes: one ledger transaction and one JSON event line — off the event loop.

The ledger (``state/ledger.py``) checks each transition and appends to its own event table in the same transaction;
the journal then writes the same change as a JSON line (``gcbulk.engine.upload.progress.EventLog``) for people and tools that
follow a run live. An idempotent repeat (the ledger returns False) writes no line.

Why a thread: a transition costs about a millisecond (a few queries and an fsync, ``synchronous=FULL``), and a run
of small files makes thousands of them. Run on the event loop, they stalled every transfer (measured: 5 of 13 s of
a 500-file run were SQLite on the loop). sqlite3 connections are bound to the thread that opened them, so
``LedgerRunner`` opens the ledger on one dedicated thread and sends every call there, in order; the loop awaits the
result, so each step is still recorded before the next one starts.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import anyio

from gcbulk.engine.plan.titles import redacted
from gcbulk.engine.upload.progress import EventLog
from gcbulk.state.ledger import Ledger
from gcbulk.state.records import JobBinding
from gcbulk.state.sqlite_file import ledger_faults

T = TypeVar("T")
# One transition of ``Journal.record_together``: its ledger method's name, positional arguments and fields.
Step = tuple[str, Sequence[Any], dict[str, Any]]


class LedgerRunner:
    """Owns the ledger on its own thread: ``async with LedgerRunner(path, binding) as runner``."""

    def __init__(self, path: Path, binding: JobBinding, *, job_file: Path | None = None) -> None:
        self.path = path
        self.binding = binding
        self.job_file = job_file
        self._executor: ThreadPoolExecutor | None = None
        self.ledger: Ledger | None = None

    async def __aenter__(self) -> LedgerRunner:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gcbulk-ledger")
        try:
            self.ledger = await self._submit(Ledger.open, self.path, self.binding, job_file=self.job_file)
        except BaseException:
            self._executor.shutdown(wait=True)
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        with anyio.CancelScope(shield=True):  # writes already queued are finished, then the ledger is closed
            if self.ledger is not None:
                await self._submit(self.ledger.close)
        assert self._executor is not None
        self._executor.shutdown(wait=True)

    async def _submit(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        assert self._executor is not None
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, functools.partial(self._translated, fn, *args, **kwargs)
        )

    def _translated(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        # Every ledger call of the engine: a full disk or a damaged file is a LedgerError with what to do, never a
        # raw sqlite3 traceback.
        with ledger_faults(self.path):
            return fn(*args, **kwargs)

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """``ledger.<method>(*args, **kwargs)`` on the ledger's thread."""
        return await self._submit(getattr(self.ledger, method), *args, **kwargs)

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(ledger, *args, **kwargs)`` on the ledger's thread (e.g. recording a plan)."""
        return await self._submit(fn, self.ledger, *args, **kwargs)

    async def pages(self, method: str, *args: Any, page: int = 64, **kwargs: Any) -> Any:
        """Iterates a ledger generator (e.g. ``cases_to_run``), advancing it ``page`` items at a time on the
        ledger's thread."""
        iterator: Iterator[Any] = await self.call(method, *args, **kwargs)

        def take() -> list[Any]:
            return [item for _, item in zip(range(page), iterator, strict=False)]

        while batch := await self._submit(take):
            for item in batch:
                yield item


class Journal:
    def __init__(self, runner: LedgerRunner, events: EventLog, *, redact_titles: bool = False) -> None:
        self.runner = runner
        self.events = events
        # cases.redact_titles: event lines name a case by a hash of its title (the ledger keeps the title).
        self._case = redacted if redact_titles else (lambda title: title)

    async def record(self, transition: str, *args: Any, case: str | None = None, **fields: Any) -> Any:
        """``ledger.<transition>(*args, **fields)``, then one event line if it changed anything."""
        result = await self.runner.call(transition, *args, **fields)
        if result is not False:
            self.events.emit(
                transition, case=None if case is None else self._case(case), key=list(args), **_printable(fields)
            )
        return result

    async def record_together(self, steps: Sequence[Step], *, case: str | None = None) -> list[Any]:
        """Transitions ``(name, args, fields)`` the engine takes back to back, with no request to the server between
        them, in one ledger transaction and one trip to the ledger's thread (``Ledger.record_together``): all are
        recorded, or — if one is refused — none. Then one event line for each that changed something, in order."""
        results = await self.runner.call(
            "record_together", [(name, tuple(args), dict(fields)) for name, args, fields in steps]
        )
        self._emit(steps, results, case)
        return results

    async def record_then_read(
        self,
        transition: str,
        args: Sequence[Any],
        query: str,
        *query_args: Any,
        case: str | None = None,
        also: Sequence[Step] = (),
        **fields: Any,
    ) -> Any:
        """``record(transition, *args, **fields)`` — with the steps ``also`` in the same transaction, as
        ``record_together`` — then ``read(query, *query_args)`` of what it wrote, in one trip to the ledger's thread.
        The read sees the transitions committed, as separate calls would."""
        steps: list[Step] = [(transition, tuple(args), dict(fields)), *also]

        def both(ledger: Ledger) -> tuple[list[Any], Any, BaseException | None]:
            results = ledger.record_together(steps) if also else [getattr(ledger, transition)(*args, **fields)]
            try:
                return results, getattr(ledger, query)(*query_args), None
            except Exception as failed:  # noqa: BLE001 - raised below, once the recorded steps have their lines
                return results, None, failed

        results, answer, failed = await self.runner.run(both)
        self._emit(steps, results, case)
        if failed is not None:
            with ledger_faults(self.runner.path):  # as LedgerRunner would have said it
                raise failed
        return answer

    def _emit(self, steps: Sequence[Step], results: Sequence[Any], case: str | None) -> None:
        for (name, args, fields), result in zip(steps, results, strict=True):
            if result is not False:
                self.events.emit(
                    name, case=None if case is None else self._case(case), key=list(args), **_printable(fields)
                )

    async def read(self, query: str, *args: Any, **kwargs: Any) -> Any:
        """A ledger query (``case_work``, ``upload`` …) on the ledger's thread."""
        return await self.runner.call(query, *args, **kwargs)

    def note(self, event: str, *, case: str | None = None, **fields: Any) -> None:
        """An event line that changes no state (an adoption, a stop request, a progress snapshot)."""
        self.events.emit(event, case=None if case is None else self._case(case), **_printable(fields))


def _printable(fields: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}
