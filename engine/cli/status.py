"""``gcbulk status JOB.toml``: counts by state, the cases that need a person's attention, and the imports past their
expected time.

Reads the ledger without taking its lock, so it works while ``gcbulk run`` is busy. Exit 0, or 1 when some cases
failed or are blocked, 2 when the job file or the ledger cannot be used.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from gcbulk.engine import settings
from gcbulk.engine.gc.errors import ConfigurationError
from gcbulk.engine.gc.limits import UPLOAD_CAP
from gcbulk.engine.ledger_location import add_ledger_argument
from gcbulk.engine.service.status import collect_status
from gcbulk.engine.upload.progress import LimitWait
from gcbulk.state.ledger import Ledger, LedgerError

HELP = "Show a job's progress from its ledger: counts by state and the cases that need attention."
_SHOW = 50
_SERVER_TIMEOUT_SECONDS = 15
_KINDS = (
    ("case", "cases"),
    ("display_set", "display sets"),
    ("item", "values"),
    ("upload", "uploads"),
    ("part", "parts"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job", type=Path, help="the job file (TOML)")
    parser.add_argument("--json", action="store_true", help="print the status as JSON")
    parser.add_argument(
        "--redact-titles",
        action="store_true",
        help="show a hash of each title and folder instead (also: cases.redact_titles in the job)",
    )
    add_ledger_argument(parser)
    parser.add_argument(
        "--offline",
        action="store_true",
        help="read only the ledger; do not ask the server how many uploads the account holds",
    )


def run(args: argparse.Namespace) -> int:
    try:
        # Job file + GCBULK_* environment + flags (engine/settings.py), so a container's ledger path applies here too.
        resolved = settings.resolve(args.job, args, read_token=False)
        with Ledger.open_readonly(resolved.ledger, resolved.job.binding) as ledger:
            redact = args.redact_titles or resolved.job.cases.redact_titles
            status = collect_status(ledger, limit=None if args.json else _SHOW, redact=redact)
            attention_total = sum(
                ledger.counts_by_state()["case"].get(state, 0) for state in ("failed", "blocked", "vanished")
            )
    except (ConfigurationError, LedgerError) as exc:
        print(f"gcbulk status: {exc}", file=sys.stderr)
        return 2
    if not args.offline:
        status.update(server_upload_count(args))
    if args.json:
        print(json.dumps(status, indent=2))
    else:
        print_status(status, attention_total)
    cases = status["counts"]["case"]
    return 1 if cases.get("failed") or cases.get("blocked") else 0


def server_upload_count(args: argparse.Namespace) -> dict[str, Any]:
    """The account's uploads as the server counts them (docs/gc-api.md §1: what its 2000 cap counts, other tools' and lost
    creates included), next to the ledger's own; unknown, with the reason, when the server cannot be asked."""
    import anyio

    from gcbulk.engine.gc.client import GrandChallengeClient
    from gcbulk.engine.gc.errors import GcbulkError
    from gcbulk.engine.gc.retry import RetryPolicy

    try:
        resolved = settings.resolve(args.job, args)
        token = resolved.require_token()
    except (ConfigurationError, OSError) as exc:
        return {"server_live_uploads": None, "server_live_uploads_error": f"no token to ask it: {exc}"}

    async def count() -> int:
        # status answers at once or says why not: two quick tries, and a bound on the whole question.
        with anyio.fail_after(_SERVER_TIMEOUT_SECONDS):
            async with GrandChallengeClient(
                base_url=resolved.job.base_url,
                token=token,
                ca_file=resolved.job.ca_file,
                retry_policy=RetryPolicy(attempts_per_item=2, max_delay=1.0),
            ) as client:
                return await client.count_uploads()

    try:
        return {"server_live_uploads": anyio.run(count), "server_live_uploads_error": None}
    except TimeoutError:
        reason = f"no answer from {resolved.job.base_url} within {_SERVER_TIMEOUT_SECONDS} s"
    except (GcbulkError, OSError) as exc:
        reason = str(exc)
    return {"server_live_uploads": None, "server_live_uploads_error": reason}


def print_status(status: dict[str, Any], attention_total: int, out: Any = None) -> None:
    out = out or sys.stdout
    print(f"Ledger {status['ledger']} (plan {status['plan_state']})", file=out)
    for kind, label in _KINDS:
        counts = status["counts"].get(kind, {})
        total = sum(counts.values())
        detail = ", ".join(f"{state} {n}" for state, n in sorted(counts.items())) or "none"
        print(f"  {label:<13} {total:>8}  {detail}", file=out)
    print(f"  live uploads: {status['live_uploads']} of this job (ledger)", file=out, end="")
    if status.get("server_live_uploads") is not None:
        print(
            f"; {status['server_live_uploads']} on the server for this account (it refuses more than {UPLOAD_CAP})",
            file=out,
        )
    elif status.get("server_live_uploads_error"):
        print(f"; on the server: unknown ({status['server_live_uploads_error']})", file=out)
    else:
        print(file=out)
    print_workers(status.get("workers", []), out)
    waits = limit_waits(status)
    for wait in waits:
        print(f"Needs attention: {wait.describe()}", file=out)
    rows = status["needs_attention"]
    late = status.get("imports_overdue", [])
    if late:
        print(f"Imports past their expected time ({len(late)}), needing attention:", file=out)
        for wait in late[:_SHOW]:
            print(
                f"  {wait['title']}: {wait['socket']} waiting {wait['waiting_seconds']} s for the server's import "
                f"(expected about {wait['expected_seconds']} s)",
                file=out,
            )
        if len(late) > _SHOW:
            print(f"  … and {len(late) - _SHOW} more (--json lists them all)", file=out)
    if not rows:
        if not late and not waits:
            print("Nothing needs attention.", file=out)
        return
    print(f"Cases needing attention ({attention_total}):", file=out)
    for row in rows:
        reason = row["last_error"] or "; ".join(f["message"] for f in row["findings"] if f["severity"] != "info")
        if row["state"] == "vanished":
            reason = reason or "its folder is gone from the case tree (nothing was deleted on Grand Challenge)"
        print(f"  {row['state']:<8} {row['title']}: {reason}", file=out)
    if attention_total > len(rows):
        print(f"  … and {attention_total - len(rows)} more (--json lists them all)", file=out)


def limit_waits(status: dict[str, Any]) -> list[LimitWait]:
    """The live workers' waits on the server's limits, one per limit: their uploads added, the soonest next try."""
    merged: dict[str, LimitWait] = {}
    for worker in status.get("workers", []):
        for raw in worker.get("limit_waits", []):
            wait = LimitWait(**raw)
            known = merged.get(wait.limit)
            merged[wait.limit] = (
                wait
                if known is None
                else LimitWait(wait.limit, known.waiting + wait.waiting, min(known.next_try_at, wait.next_try_at))
            )
    return [merged[limit] for limit in sorted(merged)]


def print_workers(workers: list[dict[str, Any]], out: Any) -> None:
    """The live workers one per line; the others (stopped, or silent: killed, or their machine lost) counted."""
    live = [w for w in workers if w["status"] == "live"]
    if not live:
        return
    gone = len(workers) - len(live)
    print(f"Workers: {len(live)} live" + (f", {gone} stopped or silent" if gone else ""), file=out)
    for w in live:
        held = ", ".join(f"{name} {n}" for name, n in sorted(w["holdings"].items())) or "none"
        print(
            f"  {w['worker_id']:<24} {w['cases_leased']:>4} cases leased, heartbeat {w['seconds_since_heartbeat']:.0f}"
            f" s ago, limits api {w['api_limit']} imports {w['imports_limit']}, holding {held}",
            file=out,
        )
