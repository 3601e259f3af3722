"""gcbulk's Python API, for notebooks and scripts: the same code the ``gcbulk`` command runs, as functions.

The tutorial's steps, at scale::

    import gcbulk

    job = gcbulk.Job("job.toml")             # settings as `gcbulk run` resolves them (GCBULK_* over the job file)
    report = job.plan(dry_run=True)          # what would be sent, and every finding
    outcome = job.run()                      # upload, create display sets, wait for the imports; resumable
    job.status()                             # counts by state and the cases that need attention
    job.verify()                             # the ledger against the server: what it lost is sent by the next run

    study = gcbulk.ReaderStudy("my-study")   # token from $GRAND_CHALLENGE_AUTHORIZATION, as gcapi
    study.answers()                          # every answer, choice titles readable
    study.answers_per_case()                 # one row per display set and reader
    study.export("results/")                 # the files of `gcbulk export`, masks included
    study.reorder(by="natural-title")        # case2 before case10

Every call is synchronous. Inside a running event loop (a Jupyter cell) the work runs on a worker thread with its own
loop, so the notebook's loop is never blocked by nested ``asyncio.run`` errors; signals are then not watched (interrupt
the kernel to stop: the ledger makes the next call resume).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import csv
import dataclasses
import hashlib
import json
import logging
import sys
import tempfile
import types
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

import platformdirs

from gcbulk.engine import settings
from gcbulk.engine.gc.client import GrandChallengeClient
from gcbulk.engine.gc.errors import ConfigurationError
from gcbulk.engine.gc.retry import RetryBudget, item_budget
from gcbulk.engine.ledger_location import default_reorder_state, ledger_exists, user_reorder_state
from gcbulk.engine.results.export import (
    ExportOptions,
    ExportSummary,
    export_reader_study,
)
from gcbulk.engine.results.export_files import ANSWERS_JSONL, PER_CASE_CSV
from gcbulk.engine.results.masks import DownloadLimits
from gcbulk.engine.results.reorder import ReorderSummary, dry_run_summary, prepare_reorder, run_reorder
from gcbulk.engine.results.safe_paths import safe_component
from gcbulk.engine.service.plan_recording import PlanReport
from gcbulk.engine.upload.outcome import CaseResult
from gcbulk.engine.upload.reconcile import VerifyResult
from gcbulk.engine.upload.transfer import RunOutcome
from gcbulk.state.ledger import Ledger
from gcbulk.state.reorder_ledger import ReorderLedger

log = logging.getLogger("gcbulk")
T = TypeVar("T")
Order = Literal["title", "natural-title"]

__all__ = [
    "CaseResult",
    "Job",
    "PlanReport",
    "ReaderStudy",
    "RunOutcome",
    "VerifyResult",
    "export_study",
    "reorder_study",
]


def _off_the_loop(call: Callable[[], T]) -> T:
    """``call()``, on a worker thread when this thread already runs an event loop (a Jupyter cell): whatever ``call``
    runs — ``asyncio.run`` in the planner's socket check, a whole transfer — gets a private loop there, and the
    notebook's loop is never asked to nest one."""
    if not _loop_running():
        return call()
    with concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="gcbulk") as pool:
        return pool.submit(call).result()


def _run_sync(make: Callable[[], Awaitable[T]]) -> T:
    """Runs a coroutine to the end from synchronous code, also when this thread already runs an event loop."""
    return _off_the_loop(lambda: asyncio.run(make()))  # type: ignore[arg-type]


def _refuse_in_a_reimported_script(caller: types.FrameType) -> None:
    """gcbulk's DICOM workers are started by forkserver (Python 3.14's default), which imports the caller's script
    again in each worker, as ``__mp_main__``: a ``Job`` made by its top-level code would run the job a second time
    inside a worker. Made there, it stops the worker with what to change instead."""
    if caller.f_globals.get("__name__") == "__mp_main__" and caller.f_code.co_name == "<module>":
        raise ConfigurationError(
            f"gcbulk.Job was created by the top-level code of {caller.f_code.co_filename} while a worker process "
            "imported it again (gcbulk's DICOM workers do, as any multiprocessing pool): put the script's calls "
            'under `if __name__ == "__main__":`'
        )


class Job:
    """One job file: its plan, its run and its status, with the settings ``gcbulk run`` would use.

    ``token`` overrides the environment's (``$GRAND_CHALLENGE_AUTHORIZATION`` / ``$GCBULK_TOKEN_FILE``); ``ledger``
    the ledger path or a PostgreSQL DSN (``postgresql://…``, several workers on one job); ``environ`` the environment read for ``GCBULK_*`` (default: this process's).
    Raises ``gcbulk.ConfigurationError`` naming what is wrong in the job file or the environment.
    """

    def __init__(
        self,
        job_file: Path | str,
        *,
        token: str | None = None,
        ledger: Path | str | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        import argparse

        _refuse_in_a_reimported_script(sys._getframe(1))
        flags = argparse.Namespace(ledger=ledger)  # a path, or a PostgreSQL DSN kept as it is
        resolved = settings.resolve(job_file, flags, environ, read_token=token is None)
        if token is not None:
            resolved = dataclasses.replace(resolved, token=token, token_source="the Python API's token argument")
        # A notebook has no terminal progress bar or port to spare: no metrics endpoint unless the caller set one.
        if resolved.sources.get("metrics_address") == settings.DEFAULT:
            resolved = dataclasses.replace(resolved, metrics_address=None)
        self.settings: settings.RunSettings = resolved

    def __repr__(self) -> str:
        return f"Job({str(self.settings.job.job_file)!r}, reader_study={self.settings.job.reader_study!r})"

    def plan(self, *, dry_run: bool = False, offline: bool = False) -> PlanReport:
        """Walks the case tree, checks it, and records the plan in the ledger (``dry_run``: writes nothing).
        Returns the ``PlanReport`` ``gcbulk plan`` prints: ``.diff``, ``.findings``, ``.blocking``, ``.as_dict()``.
        ``offline`` skips reading the sockets from the server."""
        return _off_the_loop(lambda: self._plan(dry_run=dry_run, offline=offline))

    def _plan(self, *, dry_run: bool, offline: bool) -> PlanReport:
        from gcbulk.engine.service.plan_recording import fetch_catalogue, plan_into_ledger

        job = self.settings.job
        # A dry run sends only GETs: the editor check (a POST the server refuses) is left to run().
        catalogue = (
            None if offline else fetch_catalogue(job, self.settings.require_token(), check_editor=not dry_run)[0]
        )
        if dry_run and not ledger_exists(self.settings.ledger):
            with tempfile.TemporaryDirectory(prefix="gcbulk-plan-") as scratch:
                with Ledger.open(Path(scratch) / "scratch.ledger.sqlite", job.binding) as ledger:
                    report = plan_into_ledger(job, ledger, catalogue=catalogue, dry_run=True)
            report.ledger_path = None
            return report
        with Ledger.open(self.settings.ledger, job.binding, job_file=job.job_file) as ledger:
            return plan_into_ledger(job, ledger, catalogue=catalogue, dry_run=dry_run)

    def run(self, *, replan: bool = False) -> RunOutcome:
        """Plans if needed, then runs every case to the end, as ``gcbulk run``. Returns the ``RunOutcome``
        (``.done``; ``.failed`` and ``.requeued``: ``CaseResult(title, reason)`` records). Raises ``gcbulk.PlanBlocked`` when the plan has blocking findings."""
        from gcbulk.engine.service.job_service import JobService, run_once

        in_loop = _loop_running()
        service = JobService(self.settings, watch_signals=not in_loop)
        outcome = _run_sync(lambda: service.serve(lambda s: run_once(s, replan=replan)))
        if outcome is None:
            raise KeyboardInterrupt("the run was stopped; call run() again to resume")
        return outcome

    def verify(self) -> VerifyResult:
        """Compares the ledger with the server, as ``gcbulk verify``: what the server lost is re-queued for the next
        ``run()``, and orphan uploads of lost creates are aborted. Returns the ``VerifyResult``
        (``.consistent``, ``.as_dict()``)."""
        from gcbulk.engine.service.job_service import JobService
        from gcbulk.engine.upload.reconcile import verify

        service = JobService(self.settings, watch_signals=not _loop_running())
        slug = self.settings.job.reader_study

        async def body(service: JobService) -> VerifyResult:
            return await verify(service.client, service.journal, slug)  # type: ignore[arg-type]

        result = _run_sync(lambda: service.serve(body))
        if result is None:
            raise KeyboardInterrupt("verify was stopped; call verify() again")
        return result

    def status(self) -> dict[str, Any]:
        """Counts by state and the cases that need attention, read from the ledger (works while a run is busy)."""
        from gcbulk.engine.service.status import collect_status

        def read() -> dict[str, Any]:
            with Ledger.open_readonly(self.settings.ledger, self.settings.job.binding) as ledger:
                return collect_status(ledger)

        return _off_the_loop(read)


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


# -------------------------------------------------------------------------------------------------- results side
async def export_study(
    server: settings.ServerSettings,
    out_dir: Path,
    *,
    mine: bool = False,
    mask_downloads: int = 8,
    masks: bool = True,
    limits: DownloadLimits | None = None,
) -> ExportSummary:
    """``gcbulk export``: the study's questions, display sets, answers and (``masks``) mask images into ``out_dir``,
    incrementally. Raises ConfigurationError for a bad study, token or folder."""
    if mask_downloads < 1:
        raise ConfigurationError("mask_downloads (--mask-downloads) must be at least 1")
    options = ExportOptions(
        reader_study=server.require_reader_study(),
        out_dir=Path(out_dir).absolute(),
        mine=mine,
        mask_downloads=mask_downloads,
        masks=masks,
        download_limits=limits or DownloadLimits(),
    )
    async with _client(server) as client:
        await _reach_study(client, options.reader_study)
        return await export_reader_study(client, options)


async def reorder_study(
    server: settings.ServerSettings,
    *,
    by: Order | None = None,
    from_csv: Path | None = None,
    ledger: Path | None = None,
    concurrency: int = 8,
    dry_run: bool = False,
    skip_answered: bool = False,
    job_file: Path | None = None,
) -> ReorderSummary:
    """``gcbulk reorder``: new ``order`` values for the study's display sets, by title or from a CSV; all or nothing
    (``engine/results/reorder.py``): every display set is checked first, and a plan that would fail anywhere changes
    nothing (``summary.refused`` says why) unless ``skip_answered``. ``dry_run`` only shows the plan. Idempotent and
    resumable through ``ledger``: by default beside the job's ledger (``job_file``), else in the user's state folder."""
    if (by is None) == (from_csv is None):
        raise ConfigurationError("reorder needs exactly one of by='title'|'natural-title' or from_csv=PATH")
    if by is not None and by not in ("title", "natural-title"):
        raise ConfigurationError(f"reorder by {by!r}: use 'title' or 'natural-title'")
    if concurrency < 1:
        raise ConfigurationError("concurrency (--concurrency) must be at least 1")
    slug = server.require_reader_study()
    async with _client(server) as client:
        await _reach_study(client, slug)  # an unreachable server ends here, saying so, as for plan
        plan = await prepare_reorder(
            client, slug, by=by, from_csv=from_csv, skip_answered=skip_answered, concurrency=concurrency
        )
        if plan.refusals:
            return ReorderSummary(planned=len(plan.targets), refused=plan.refusals)
        if dry_run:
            return dry_run_summary(plan)
        with ReorderLedger.open(
            ledger or default_reorder_ledger(server, job_file), reader_study=slug, base_url=client.base_url
        ) as progress:
            summary = await run_reorder(client, progress, plan.targets, plan.current, concurrency=concurrency)
        summary.kept = plan.kept
        return summary


def default_reorder_ledger(server: settings.ServerSettings, job_file: Path | None) -> Path:
    """Beside the job's ledger when there is a job; else the user's state folder (never the current folder)."""
    if job_file is not None:
        return default_reorder_state(settings.resolve(job_file, read_token=False).ledger, Path(job_file))
    path = user_reorder_state(server.base_url, server.require_reader_study())
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def _client(server: settings.ServerSettings) -> GrandChallengeClient:
    return GrandChallengeClient(
        base_url=server.base_url, token=server.require_token(), ca_file=server.ca_file, on_retry=_say_retry
    )


# The first request of export and reorder gets as many tries as `plan`'s checks: an unreachable server is named within
# seconds (exit 2), not after the minutes a transfer's budget would spend.
FIRST_CONTACT_ATTEMPTS = 3


async def _reach_study(client: GrandChallengeClient, slug: str) -> dict[str, Any]:
    with item_budget(RetryBudget(FIRST_CONTACT_ATTEMPTS, f"reaching {client.base_url}")):
        return await client.reader_study_by_slug(slug)  # cached: the work that follows asks it again for free


def _say_retry(what: str, error: BaseException, delay: float) -> None:
    """A voice while the results side retries: a wait of seconds says what it waits for."""
    log.warning("%s: %s; trying again in %.1f s", what, error, delay)


def answers_cache(base_url: str, slug: str) -> Path:
    """The folder where ``ReaderStudy`` keeps a study's answers between calls: under this user's cache directory
    (platformdirs: ``~/.cache/gcbulk`` on Linux, ``~/Library/Caches/gcbulk`` on macOS), one folder per server and
    study — never the shared system temp directory, where another user could read or plant answers, and never one
    study's cache for a study of the same slug on another server."""
    host = safe_component(urlsplit(base_url).netloc or "server", fallback="server")
    server_key = hashlib.sha256(base_url.encode()).hexdigest()[:12]  # two paths on one host are two servers
    root = platformdirs.user_cache_path("gcbulk", appauthor=False) / "answers"
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    return root / f"{host}-{server_key}" / safe_component(slug, fallback="study")


class ReaderStudy:
    """A reader study's results, as the tutorial reads them, for a whole study at once.

    ``token`` defaults to ``$GRAND_CHALLENGE_AUTHORIZATION`` (or ``$GCBULK_TOKEN_FILE``), ``base_url`` to
    ``$GCBULK_BASE_URL`` and else the public Grand Challenge; ``job`` takes server, CA file and slug from a job file.
    ``cache`` is where answers are kept between calls (default: ``answers_cache(base_url, slug)``, under the user's
    own cache directory), so a second call fetches only what changed.
    """

    def __init__(
        self,
        slug: str | None = None,
        *,
        base_url: str | None = None,
        token: str | None = None,
        ca_file: Path | str | None = None,
        job: Path | str | None = None,
        cache: Path | str | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        server = settings.resolve_server(
            job_file=job,
            base_url=base_url,
            ca_file=None if ca_file is None else Path(ca_file),
            reader_study=slug,
            environ=environ,
            read_token=token is None,
        )
        if token is not None:
            server = dataclasses.replace(server, token=token)
        self.server = server
        self._job = None if job is None else Path(job)
        self.slug = server.require_reader_study()
        self.cache = Path(cache) if cache is not None else answers_cache(server.base_url, self.slug)

    def __repr__(self) -> str:
        return f"ReaderStudy({self.slug!r}, base_url={self.server.base_url!r})"

    def export(
        self, out_dir: Path | str, *, mine: bool = False, masks: bool = True, mask_downloads: int = 8
    ) -> ExportSummary:
        """Everything ``gcbulk export`` writes (answers.csv, answers.jsonl, answers_per_case.csv, questions.json,
        display_sets.csv, masks/) into ``out_dir``; returns the summary (``.lines()``, ``.counts()``)."""
        return _run_sync(
            lambda: export_study(self.server, Path(out_dir), mine=mine, masks=masks, mask_downloads=mask_downloads)
        )

    def answers(self, *, mine: bool = False) -> list[dict[str, Any]]:
        """Every answer you may see (``mine``: your own only), one dict each: case, question, reader, the readable
        answer (choice titles, not option ids) and the raw one, as ``answers.jsonl``."""
        folder = self._refreshed(mine)
        with open(folder / ANSWERS_JSONL, encoding="utf-8") as lines:
            return [json.loads(line) for line in lines if line.strip()]

    def answers_per_case(self, *, mine: bool = False) -> list[dict[str, str]]:
        """One row per display set and reader, a column per question (and per socket value), as
        ``answers_per_case.csv``."""
        folder = self._refreshed(mine)
        with open(folder / PER_CASE_CSV, newline="", encoding="utf-8") as table:
            return list(csv.DictReader(table))

    def download_masks(self, out_dir: Path | str, *, mine: bool = False, mask_downloads: int = 8) -> ExportSummary:
        """The mask images of every Mask answer, to ``out_dir/masks/<case>/<question>/<reader>.<ext>``, resumable."""
        return self.export(out_dir, mine=mine, masks=True, mask_downloads=mask_downloads)

    def reorder(
        self,
        *,
        by: Order | None = None,
        from_csv: Path | str | None = None,
        ledger: Path | str | None = None,
        concurrency: int = 8,
        dry_run: bool = False,
        skip_answered: bool = False,
    ) -> ReorderSummary:
        """Sets the display sets' order by title (``by``) or from a CSV of order and pk/title columns, all or nothing:
        ``summary.refused`` says why nothing changed; ``dry_run`` only shows the plan (``summary.lines()``)."""
        return _run_sync(
            lambda: reorder_study(
                self.server,
                by=by,
                from_csv=None if from_csv is None else Path(from_csv),
                ledger=None if ledger is None else Path(ledger),
                concurrency=concurrency,
                dry_run=dry_run,
                skip_answered=skip_answered,
                job_file=self._job,
            )
        )

    def _refreshed(self, mine: bool) -> Path:
        folder = self.cache / ("mine" if mine else "all")
        _run_sync(lambda: export_study(self.server, folder, mine=mine, masks=False))
        return folder
