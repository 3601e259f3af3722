"""How far ahead of its work a worker claims cases, when other workers may share the job.

A claimed case is leased: no other worker may run it. Alone, a worker loses nothing by claiming ``cases_in_flight``
cases at once, and gains the overlap of their first steps. Beside other workers it would hoard them: the first
worker to start took 32 cases, of which it could move the files of two at a time, and at the end the others sat idle
while it finished its queue (100 cases, 4 workers: 32 / 32 / 32 / 4). So a worker sharing a job holds at most
``ahead`` cases that have not yet started moving files; a case stops counting once one of its files takes a file
slot, or its upload step ends (nothing left to upload, or it failed), or the case ends.

The upload path says so through ``uploads_under_way()``, which finds its case's token in a context variable, so no
object is threaded through the steps in between.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import anyio

# Two: while one case stages its files (DICOM de-identification) or waits for a file slot, the next is ready.
CLAIM_AHEAD = 2


class _StartToken:
    def __init__(self, pacer: ClaimPacer) -> None:
        self._pacer: ClaimPacer | None = pacer

    def give_back(self) -> None:
        if self._pacer is not None and self._pacer.cases_not_started is not None:
            self._pacer.cases_not_started.release()
        self._pacer = None


_case_token: ContextVar[_StartToken | None] = ContextVar("case_start_token", default=None)


def uploads_under_way() -> None:
    """The case this task runs has started moving files (or has none to move): the worker may claim another."""
    token = _case_token.get()
    if token is not None:
        token.give_back()


class ClaimPacer:
    """``await pacer.before_claim()`` before each claim; ``pacer.unclaimed()`` when none came; ``with
    pacer.case():`` in the claimed case's task."""

    def __init__(self, ahead: int | None) -> None:
        # None: no pacing (a worker alone on its job).
        self.cases_not_started = anyio.Semaphore(ahead) if ahead is not None else None

    async def before_claim(self) -> None:
        if self.cases_not_started is not None:
            await self.cases_not_started.acquire()

    def unclaimed(self) -> None:
        if self.cases_not_started is not None:
            self.cases_not_started.release()

    @contextmanager
    def case(self) -> Iterator[None]:
        token = _StartToken(self) if self.cases_not_started is not None else None
        _case_token.set(token)
        try:
            yield
        finally:
            if token is not None:
                token.give_back()
