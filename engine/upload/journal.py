"""Each state change the engine makes: recorded in a ledger transaction, then one JSON event line — off the event loop.

The ledger (``state/ledger.py``) checks each transition and appends to its own event table in the same transaction;
the journal then writes the same change as a JSON line (``gcbulk.engine.upload.progress.EventLog``) for people and tools that
follow a run live. An idempotent repeat (the ledger returns False) writes no line. The steps that wait while the
ledger's thread is busy share one transaction (``LedgerRunner.record``, group commit: docs/architecture.md), each
caller still getting only its own outcome.

Why a thread: a transition costs about a millisecond (a few queries, and an fsync for the few records that
``state/sqlite_file.py`` names), and a run of small files makes thousands of them. Run on the event loop, they stalled every transfer (measured: 5 of 13 s of
a 500-file run were SQLite on the loop). sqlite3 connections are bound to the thread that opened them, so
``LedgerRunner`` opens the ledger on one dedicated thread and sends every call there, in order; the loop awaits the
result, so each step is still recorded before the next one starts.

Typed calls: the engine hands the runner the ledger's bound method and its arguments (``await runner.run(
ledger.case_done, case_id)``, ``journal.record(step(ledger.case_done, case_id))``), checked by ``ParamSpec`` against
the method's signature and returning its own type — never a method name in a string.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Concatenate, ParamSpec, TypeVar

import anyio

from gcbulk.engine.plan.titles import redacted
from gcbulk.engine.upload.progress import EventLog
from gcbulk.state.errors import LedgerError
from gcbulk.state.ledger import Ledger
from gcbulk.state.records import JobBinding
from gcbulk.state.sqlite_file import ledger_faults
from gcbulk.state.steps import Recorded, Recording, Step, step

__all__ = ["Journal", "LedgerRunner", "Step", "step"]

P = ParamSpec("P")
T = TypeVar("T")
Q = TypeVar("Q")
# A ledger generator (``cases_to_run``, ``recorded_cases``) is advanced this many items per trip to its thread.
PAGE = 64
# At most this many recordings share one transaction (``LedgerRunner.record``): enough to take what queues behind a
# busy ledger, few enough that one COMMIT never holds many callers' answers back.
BATCH = 64


class LedgerRunner:
    """Owns the ledger on its own thread: ``async with LedgerRunner(path, binding) as runner``."""

    def __init__(self, path: Path | str, binding: JobBinding, *, job_file: Path | None = None) -> None:
        # ``path``: the ledger's file, or a PostgreSQL DSN (state/dsn.py).
        self.path = path
        self.binding = binding
        self.job_file = job_file
        self._executor: ThreadPoolExecutor | None = None
        self._ledger: Ledger | None = None
        # Group commit (``record``): the recordings waiting for the ledger's thread, taken by the batch that runs
        # next; ``_batch_queued``: that batch is on the thread's queue already. Both shared with the thread: the lock.
        self._waiting: list[_Waiting] = []
        self._batch_queued = False
        self._waiting_lock = threading.Lock()

    @property
    def ledger(self) -> Ledger:
        """The open ledger, for naming its methods (``runner.ledger.case_done``); call them through :meth:`run`."""
        if self._ledger is None:
            raise LedgerError(f"the ledger {self.path} is not open (use 'async with LedgerRunner(...)')")
        return self._ledger

    @property
    def is_open(self) -> bool:
        return self._ledger is not None

    async def __aenter__(self) -> LedgerRunner:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gcbulk-ledger")
        try:
            self._ledger = await self._submit(Ledger.open, self.path, self.binding, job_file=self.job_file)
        except BaseException:
            self._executor.shutdown(wait=True)
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        with anyio.CancelScope(shield=True):  # writes already queued are finished, then the ledger is closed
            while self._batch_queued:  # a long queue of recordings goes in several batches, each queued by the last
                await self._submit(_nothing)
            if self._ledger is not None:
                await self._submit(self._ledger.close)
        assert self._executor is not None
        self._executor.shutdown(wait=True)

    async def _submit(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        assert self._executor is not None
        call = functools.partial(fn, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._translated, call)

    def _translated(self, call: Callable[[], T]) -> T:
        # Every ledger call of the engine: a full disk or a damaged file is a LedgerError with what to do, never a
        # raw sqlite3 traceback.
        with ledger_faults(self.path):
            return call()

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """``fn(*args, **kwargs)`` on the ledger's thread: ``await runner.run(runner.ledger.case_done, case_id)``."""
        return await self._submit(fn, *args, **kwargs)

    async def record(self, recording: Recording[object]) -> Recorded:
        """Records ``recording`` together with every other recording waiting for the ledger's thread when the batch
        it joins starts there (``Ledger.record_batch``: group commit, at most ``BATCH``). A recording that finds the
        thread free goes at once, alone; those that come while it is busy go together, next. Its failures come back
        in the ``Recorded``, as the ledger made it, for the caller to raise."""
        future: asyncio.Future[Recorded] = asyncio.get_running_loop().create_future()
        with self._waiting_lock:
            self._waiting.append(_Waiting(recording, future))
            queue_one = not self._batch_queued
            self._batch_queued = True
        if queue_one:
            self._queue_batch()
        return await future

    def _queue_batch(self) -> None:
        assert self._executor is not None
        self._executor.submit(self._record_waiting)

    def _record_waiting(self) -> None:
        """On the ledger's thread: the recordings waiting now, in one batch. One that was cancelled while it waited
        is left out — nothing of it is recorded, as with a call cancelled before its turn on the thread."""
        with self._waiting_lock:
            waiting = [each for each in self._waiting if not each.future.cancelled()]
            batch, self._waiting = waiting[:BATCH], waiting[BATCH:]
            queue_next = self._batch_queued = bool(self._waiting)  # the rest: the next batch, queued below
        if queue_next:
            self._queue_batch()
        if not batch:
            return
        try:
            outcomes: list[Recorded] | BaseException = self._translated(
                functools.partial(self.ledger.record_batch, [each.recording for each in batch])
            )
        except BaseException as error:  # noqa: BLE001 - every caller of the batch gets it
            outcomes = error
        for index, each in enumerate(batch):
            answer = outcomes if isinstance(outcomes, BaseException) else outcomes[index]
            each.future.get_loop().call_soon_threadsafe(each.deliver, answer)

    async def with_ledger(self, fn: Callable[Concatenate[Ledger, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        """``fn(ledger, *args, **kwargs)`` on the ledger's thread (e.g. recording a plan, a report query)."""
        return await self._submit(fn, self.ledger, *args, **kwargs)

    async def pages(self, fn: Callable[P, Iterator[T]], *args: P.args, **kwargs: P.kwargs) -> AsyncIterator[T]:
        """Iterates a ledger generator (e.g. ``ledger.cases_to_run``), advancing it ``PAGE`` items at a time on the
        ledger's thread."""
        iterator = await self.run(fn, *args, **kwargs)

        def take() -> list[T]:
            return [item for _, item in zip(range(PAGE), iterator, strict=False)]

        while batch := await self._submit(take):
            for item in batch:
                yield item


def _nothing() -> None:
    """A call whose only effect is its turn on the ledger's thread: the calls queued before it have run."""


@dataclass(frozen=True)
class _Waiting:
    """A recording waiting for the ledger's thread, and where its caller waits for the outcome."""

    recording: Recording[object]
    future: asyncio.Future[Recorded]  # on its caller's event loop, where the outcome is delivered

    def deliver(self, outcome: Recorded | BaseException) -> None:
        if self.future.done():  # its caller was cancelled meanwhile
            return
        if isinstance(outcome, BaseException):
            self.future.set_exception(outcome)
        else:
            self.future.set_result(outcome)


class Journal:
    """Records the engine's steps: each a ledger transition on the ledger's thread, then one event line."""

    def __init__(self, runner: LedgerRunner, events: EventLog, *, redact_titles: bool = False) -> None:
        self.runner = runner
        self.events = events
        # cases.redact_titles: event lines name a case by a hash of its title (the ledger keeps the title).
        self._case: Callable[[str], str] = redacted if redact_titles else (lambda title: title)

    @property
    def ledger(self) -> Ledger:
        """The ledger whose methods the steps name (``step(journal.ledger.case_done, case_id)``)."""
        return self.runner.ledger

    async def record(self, transition: Step[T], *, case: str | None = None) -> T:
        """Run the transition, then write one event line if it changed anything (it did not return False)."""
        recorded = await self.runner.record(Recording((transition,)))
        self._raise_unless_recorded(recorded)
        self._emit([transition], recorded.results, case)
        return recorded.results[0]  # type: ignore[return-value]  # the step's own result

    async def record_together(self, steps: Sequence[Step[bool]], *, case: str | None = None) -> list[bool]:
        """Transitions the engine takes back to back, with no request to the server between them, in one ledger
        transaction and one trip to the ledger's thread (``Ledger.record_together``): all are recorded, or — if one
        is refused — none. Then one event line for each that changed something, in order."""
        recorded = await self.runner.record(Recording(tuple(steps)))
        self._raise_unless_recorded(recorded)
        self._emit(steps, recorded.results, case)
        return [bool(result) for result in recorded.results]

    async def record_then_read(
        self, transition: Step[bool], query: Step[Q], *, case: str | None = None, also: Sequence[Step[bool]] = ()
    ) -> Q:
        """``record(transition)`` — with the steps ``also`` in the same transaction, as ``record_together`` — then
        the ``query`` of what it wrote, in one trip to the ledger's thread. The read sees the transitions committed,
        as separate calls would."""
        steps = (transition, *also)
        recorded = await self.runner.record(Recording(steps, query))
        self._raise_unless_recorded(recorded)
        # A failed read is raised once the recorded steps have their lines.
        self._emit(steps, recorded.results, case)
        self._raise_unless_recorded(recorded, read=True)
        return recorded.answer  # type: ignore[return-value]  # the query's own answer (a failed read raised above)

    def _raise_unless_recorded(self, recorded: Recorded, *, read: bool = False) -> None:
        """Raises the recording's failure (of its steps; with ``read``, of its read), as the ledger's thread would
        have said it (``ledger_faults``)."""
        if recorded.failed is not None and recorded.recorded == read:
            with ledger_faults(self.runner.path):
                raise recorded.failed

    def _emit(self, steps: Sequence[Step[object]], results: Sequence[object], case: str | None) -> None:
        for each, result in zip(steps, results, strict=True):
            if result is not False:
                self.events.emit(
                    each.name,
                    case=None if case is None else self._case(case),
                    key=list(each.args),
                    **_printable(each.fields),
                )

    async def read(self, query: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """A ledger query (``journal.read(journal.ledger.case_work, case_id)``) on the ledger's thread."""
        return await self.runner.run(query, *args, **kwargs)

    def note(self, event: str, *, case: str | None = None, **fields: object) -> None:
        """An event line that changes no state (an adoption, a stop request, a progress snapshot)."""
        self.note_fields(event, fields, case=case)

    def note_fields(self, event: str, fields: Mapping[str, object], *, case: str | None = None) -> None:
        """``note`` with its fields as a record's mapping (a summary's ``as_dict()``)."""
        self.events.emit(event, case=None if case is None else self._case(case), **_printable(fields))


def _printable(fields: Mapping[str, object]) -> dict[str, object]:
    return {k: v for k, v in fields.items() if v is not None}
