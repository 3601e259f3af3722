"""A job's plan recorded in its ledger: the glue between the pure planner (``engine/plan/``), the server's socket
catalogue and the ledger (``state/replan.py``). ``gcbulk plan``, ``gcbulk run`` (``engine/service/job_service.py``)
and the Python API all plan through ``plan_into_ledger``; the report it returns (``PlanReport``) is printed by the CLI
(``engine/cli/plan_report.py``).
"""

from __future__ import annotations

import asyncio
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gcbulk.engine.gc.errors import ConfigurationError
from gcbulk.engine.jobfile import JobConfig
from gcbulk.engine.plan.cases import PlannedCase
from gcbulk.engine.plan.content import ContentCache
from gcbulk.engine.plan.findings import Finding
from gcbulk.engine.plan.planner import Planner
from gcbulk.engine.plan.preflight import Preflight, QuotaEstimate
from gcbulk.engine.service.content_cache import LedgerContentCache, LedgerFileReads
from gcbulk.engine.service.plan_checksums import PlanChecksums
from gcbulk.state.ledger import Ledger
from gcbulk.state.records import PlanDiff
from gcbulk.state.replan import planning
from gcbulk.state.server_truth import ListedDisplaySet

# Threads reading file content for the planner's checks at once: one per core, at most 8 (each read is bounded in
# size and time by the planner's ReadBudget; more threads than cores only contend).
CONTENT_READERS = min(8, os.cpu_count() or 1)


@dataclass(kw_only=True)
class PlanReport:
    config: JobConfig
    ledger_path: Path | None  # None for a dry run without a ledger
    dry_run: bool
    diff: PlanDiff
    quota: QuotaEstimate
    findings: list[Finding] = field(default_factory=list)
    # Findings about the job as a whole (the case root, the sockets, the quota): a blocking one stops every case.
    job_findings: list[Finding] = field(default_factory=list)
    strict: bool = False
    mapping: dict[str, Any] = field(default_factory=dict)  # socket → {"files": {name: cases}, …}
    mapping_lines: list[str] = field(default_factory=list)
    cases: list[dict[str, Any]] = field(default_factory=list)  # case → socket → files, as many as were asked for
    # Files the content checks read, and files whose result the ledger already had (unchanged since it was checked).
    content_files_read: int = 0
    content_files_cached: int = 0
    # The planner's own reads (MetaImage headers, JSON value files): files read, and files whose outcome the ledger
    # already had.
    planner_files_read: int = 0
    planner_files_cached: int = 0
    # Rows of the ledger's caches (content checks, planner reads) deleted: their files are gone from the tree, or no
    # longer planned.
    cache_rows_forgotten: int = 0

    @property
    def blocking(self) -> bool:
        """Nothing may run: a job-wide blocking finding, or (``--strict``) any blocking finding."""
        findings = self.findings if self.strict else self.job_findings
        return any(finding.blocking for finding in findings)

    @property
    def partly_blocked(self) -> bool:
        """Some cases (or folders of the tree) are held back by their findings; the rest can run."""
        return any(finding.blocking for finding in self.findings)

    def as_dict(self) -> dict[str, Any]:
        return {
            "reader_study": self.config.reader_study or None,
            "archive": self.config.archive or None,
            "base_url": self.config.base_url,
            "case_root": str(self.config.case_root),
            "ledger": None if self.ledger_path is None else str(self.ledger_path),
            "dry_run": self.dry_run,
            "blocking": self.blocking,
            "strict": self.strict,
            "plan": self.diff.as_dict(),
            "quota": self.quota.as_dict(),
            "mapping": self.mapping,
            "cases": self.cases,
            "findings": [finding.as_dict() for finding in self.findings],
            "content_checks": {"files_read": self.content_files_read, "files_unchanged": self.content_files_cached},
            "planner_reads": {"files_read": self.planner_files_read, "files_unchanged": self.planner_files_cached},
            "cache_rows_forgotten": self.cache_rows_forgotten,
        }


def case_row(case: PlannedCase) -> dict[str, Any]:
    """One case as ``--json`` and ``--show-cases`` show it: title, folder, blocked, socket → files (or value)."""
    sockets: dict[str, Any] = {}
    for item in case.items:
        sockets[item.socket_slug] = (
            [f.path for f in item.files]
            if item.files
            else {"value_from": item.value_path}
            if item.value_path
            else {"value": "[values]"}
        )
    return {"title": case.title, "folder": case.folder, "blocked": case.blocking, "sockets": sockets}


def fetch_catalogue(
    config: JobConfig,
    token: str,
    *,
    with_sockets: bool = True,
    with_titles: bool = False,
    check_editor: bool = True,
) -> tuple[dict[str, dict[str, Any] | None] | None, list[ListedDisplaySet] | None]:
    """Each socket the job names → the server's socket (``components/interfaces/?slug=``), or None if unknown; with
    ``with_titles``, also the study's display sets (to find those this job did not make: give them to the ledger,
    ``Ledger.add_to_study_listing``, and plan with ``check_titles_against_listing``).
    One connection for both. ``check_editor=False`` (a dry run) sends only GETs: the editor check is a POST the server
    refuses, and a dry run writes nothing, so ``run`` makes that check, before any file moves."""
    from gcbulk.engine.gc.client import GrandChallengeClient
    from gcbulk.engine.gc.retry import RetryPolicy
    from gcbulk.engine.gc.targets import target_for
    from gcbulk.engine.upload.reconcile import list_study

    async def fetch() -> tuple[dict[str, dict[str, Any] | None] | None, list[ListedDisplaySet] | None]:
        # A planning check should fail fast when the server is unreachable, not spend a transfer's retry budget.
        policy = RetryPolicy(attempts_per_item=3, max_delay=5.0)
        async with GrandChallengeClient(
            base_url=config.base_url, token=token, ca_file=config.ca_file, retry_policy=policy
        ) as client:
            # Permission before bytes, already at plan time (docs/gc-api.md §0: creating display sets needs an editor).
            target = target_for(client, config.target)
            if check_editor:
                await target.require_writer(consequence="fix that before running the job")
            catalogue = {slug: await client.get_socket(slug) for slug in config.socket_slugs} if with_sockets else None
            listing = await list_study(target) if with_titles else None
            return catalogue, listing

    return asyncio.run(fetch())


def load_catalogue(path: Path, config: JobConfig) -> dict[str, dict[str, Any] | None]:
    """The job's sockets from a JSON file (a list of sockets, or a ``components/interfaces/`` page), for offline
    planning. Raises ConfigurationError naming the file and what is wrong."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigurationError(f"--sockets {path} cannot be read: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ConfigurationError(f"--sockets {path} is not valid JSON: {exc}") from None
    sockets = data.get("results") if isinstance(data, dict) else data
    if not isinstance(sockets, list) or not all(
        isinstance(s, dict) and isinstance(s.get("slug"), str) for s in sockets
    ):
        raise ConfigurationError(
            f'--sockets {path} must hold a list of sockets, each with a "slug" (as '
            "GET components/interfaces/ returns them)"
        )
    by_slug = {s["slug"]: s for s in sockets}
    return {slug: by_slug.get(slug) for slug in config.socket_slugs}


def plan_into_ledger(
    config: JobConfig,
    ledger: Ledger,
    *,
    catalogue: dict[str, dict[str, Any] | None] | None,
    dry_run: bool = False,
    strict: bool = False,
    keep_cases: int | None = 0,
    check_content: bool = True,
    content_cache: ContentCache | None = None,
    check_titles_against_listing: bool = False,
) -> PlanReport:
    """Plan the job's tree into ``ledger`` (or, for a dry run, compute the same diff and roll it back).

    A case with a blocking finding is recorded as blocked and the job's plan stays runnable, unless ``strict`` or a
    finding about the whole job (no case) blocks. ``keep_cases`` rows of case → socket → files are kept for the report
    (None: all of them). ``content_cache``: where the content checks' results are kept; by default the ledger's
    ``content_checks`` table, so a re-plan reads only the files that changed. The planner's own reads (headers, JSON
    values) are kept in the ledger's ``file_reads`` table. After a plan (not a dry run) that walked the whole tree,
    the rows of both for files it did not see are deleted. ``check_titles_against_listing``: a case whose title a
    display set of the study's last listing into ``ledger`` holds, one this job did not make, is blocked."""
    findings: list[Finding] = []
    job_findings: list[Finding] = []
    cases: list[dict[str, Any]] = []
    file_reads = LedgerFileReads(ledger)
    planner = Planner(config, reads=file_reads)
    # Header reads and the new files' checksums spread over the cores: threads, since SimpleITK's reads, a mask's
    # inflating and hashlib's MD5 release the GIL.
    with (
        ThreadPoolExecutor(CONTENT_READERS, thread_name_prefix="gcbulk-content") as readers,
        PlanChecksums(part_size=config.engine.part_size, hashers=readers) as checksums,
        planning(
            ledger,
            rules=config.rules_dict(),
            job_file=config.job_file,
            checksum=checksums.checksum,
            dry_run=dry_run,
            # A dry run rolls back every row it writes: a checksum of each new file's bytes would be read for nothing.
            fingerprint=None if dry_run else checksums.fingerprint,
        ) as plan,
    ):
        # The study's display sets as last listed into this ledger (not offline, nor with --adopt-existing): those
        # this ledger never set out to make are someone else's, and their cases are blocked, naming that display set.
        foreign = ledger.foreign_display_set_titles() if check_titles_against_listing else {}
        in_ledger = LedgerContentCache(ledger) if content_cache is None else None
        preflight = Preflight(
            config=config,
            catalogue=catalogue,
            titles=plan.titles,
            check_content=check_content,
            content_cache=in_ledger or content_cache,
            foreign_titles=foreign,
        )
        job_findings.extend(preflight.check_job())
        # The checksums of each window of cases' new files are started on the readers with the content checks' reads:
        # the recorder finds them computed instead of hashing one file after another on this thread.
        ahead = [checksums.starting_ahead(plan.files_to_fingerprint)]
        for entry in preflight.reading_ahead(planner.plan(), readers, also=ahead):
            if isinstance(entry, Finding):
                # Findings of the tree outside any case: only a missing case root is about the whole job; a stray
                # file or an unreadable sub-folder blocks nothing but itself.
                (job_findings if entry.code == "case-root-missing" else findings).append(entry)
                continue
            case = preflight.check_case(entry)
            findings.extend(case.findings)
            plan.add(case)
            if keep_cases is None or len(cases) < keep_cases:
                cases.append(case_row(case))
        job_findings.extend(preflight.finish())
        forgotten = 0
        # Only a plan that saw the whole tree knows which files are gone: not one whose case root is missing (an
        # unmounted disk must not cost every result), nor a dry run (it writes nothing).
        walked = not dry_run and not any(f.code == "case-root-missing" for f in job_findings)
        root = str(config.case_root)
        if walked:
            forgotten += file_reads.forget_unseen(root)
        else:
            file_reads.flush()
        if in_ledger is not None:
            # The content checks look only at the files they check: their rows are pruned only when they ran.
            if walked and preflight.content_checked:
                forgotten += in_ledger.forget_unseen(root)
            else:
                in_ledger.flush()
        all_findings = job_findings + findings
        blocked = any(f.blocking for f in (all_findings if strict else job_findings))
        diff = plan.finish(blocked=blocked)
    return PlanReport(
        config=config,
        ledger_path=ledger.path,
        dry_run=dry_run,
        diff=diff,
        quota=preflight.quota,
        findings=all_findings,
        job_findings=job_findings,
        strict=strict,
        mapping=planner.mapping.as_dict(),
        mapping_lines=planner.mapping.lines(),
        cases=cases,
        content_files_read=preflight.content_files_read,
        content_files_cached=preflight.content_files_cached,
        planner_files_read=planner.reads.files_read,
        planner_files_cached=planner.reads.files_cached,
        cache_rows_forgotten=forgotten,
    )
