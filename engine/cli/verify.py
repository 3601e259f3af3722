"""``gcbulk verify JOB.toml``: compare the ledger with the server, which is the truth.

Reads the study's display sets once: a case the ledger calls done whose display set or values are gone from the
server is re-queued (the next ``gcbulk run`` sends it again, into a new display set when its own is gone), with a
line saying so. Uploads whose create answer was lost (left ``Initialized`` on the server, counting against the
2000-upload cap) are found and aborted. ``gcbulk run`` does the same at its start and end.

Exit 0 when the server holds everything the ledger says it does, 1 when cases were re-queued (run the job again),
2 when the job, the token or the ledger cannot be used.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from gcbulk.engine import settings
from gcbulk.engine.cli import EXIT_CONFIG_ERROR, EXIT_OK, EXIT_SOME_FAILED
from gcbulk.engine.cli.server_options import job_settings_with_token, run_against_server
from gcbulk.engine.plan.titles import redacted

HELP = "Compare a job's ledger with the server: re-queue what the server lost, abort orphan uploads."
_SHOW = 50


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job", type=Path, help="the job file (TOML)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument(
        "--redact-titles",
        action="store_true",
        help="show a hash of each title (also: cases.redact_titles in the job file)",
    )
    settings.add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from gcbulk.engine.gc.targets import target_for
    from gcbulk.engine.service.job_service import JobService
    from gcbulk.engine.upload.reconcile import VerifyResult, verify

    resolved = job_settings_with_token("verify", args)
    if resolved is None:
        return EXIT_CONFIG_ERROR
    # A one-off check: no metrics endpoint, and a signal simply ends it (nothing it does needs a drain).
    service = JobService(dataclasses.replace(resolved, metrics_address=None))
    redact = args.redact_titles or resolved.job.cases.redact_titles

    async def main() -> int:
        async def body(service: JobService) -> VerifyResult:
            assert service.client is not None and service.journal is not None
            return await verify(service.client, service.journal, target_for(service.client, resolved.job.target))

        result = await service.serve(body)
        if result is None:
            print("gcbulk verify: stopped before it finished; nothing was lost, run it again", file=sys.stderr)
            return EXIT_SOME_FAILED
        _print(result, as_json=args.json, redact=redact, container=resolved.job.target.a_container)
        return EXIT_OK if result.consistent else EXIT_SOME_FAILED

    return run_against_server("verify", main)


def _print(result: object, *, as_json: bool, redact: bool, container: str = "a display set") -> None:
    data = result.as_dict()  # type: ignore[attr-defined]
    if redact:
        data["requeued"] = [{**row, "title": redacted(row["title"])} for row in data["requeued"]]
    if as_json:
        print(json.dumps(data, indent=2))
        return
    print(f"Checked {data['checked']} case(s) with {container} against the server.")
    for row in data["requeued"][:_SHOW]:
        print(f"  re-queued {row['title']}: {row['reason']}")
    if len(data["requeued"]) > _SHOW:
        print(f"  … and {len(data['requeued']) - _SHOW} more (--json lists them all)")
    if data["requeued"]:
        print(f"{len(data['requeued'])} case(s) re-queued: run the job again to send them.")
    else:
        print("The server holds everything the ledger says it does.")
    if data["orphan_uploads_looked_for"]:
        print(
            f"Uploads whose create answer was lost: {data['orphan_uploads_looked_for']} looked for, "
            f"{data['orphan_uploads_aborted']} found on the server and aborted."
        )
