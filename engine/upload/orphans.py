"""Orphan uploads: a ``POST uploads/`` that reached the server but whose answer was lost (a kill, a dropped
connection, a 502 after the create) leaves an empty ``Initialized`` upload that gcbulk never learnt the pk of. It
counts against the account's 2000-upload cap until the 24 h sweep (docs/gc-api.md §1, §10: 19–32 per 50 kills).

Uploads carry no key of ours, so they are matched the only way the API allows: the ledger keeps each create's
intent (filename and time, written before the POST); the account's uploads are listed once (bounded by the cap) and an
``Initialized`` upload that no ledger row knows, with that filename, created within ``MATCH_WINDOW`` of the intent,
is aborted. Defensive, because another client of the same account may be uploading a file of the same name at the
same moment: only uploads with no parts yet are taken (an orphan of ours never got a part, since its URLs were never
asked for), each lost create claims at most one upload (the nearest in time), and an abort that goes wrong for
someone else's upload costs them one restarted upload, never data.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from gcbulk.engine.gc.client import GrandChallengeClient
from gcbulk.engine.gc.errors import MultipartUploadVanished, UploadNoLongerOpen
from gcbulk.engine.gc.uploads_api import UPLOAD_INITIALIZED, UploadRef, parse_server_time
from gcbulk.engine.upload.journal import Journal, step

log = logging.getLogger(__name__)
# Covers the create's own timeout and clock skew between this machine and the server (their clocks are not compared
# otherwise: the server's ``created`` is its own clock).
MATCH_WINDOW = timedelta(minutes=10)
# Older lost creates were swept by the server (24 h after creation, the sweep running hourly).
SWEPT_AFTER = timedelta(hours=25)


@dataclass
class OrphanSweep:
    looked_for: int = 0
    aborted: list[str] = field(default_factory=list)  # server pks
    not_found: int = 0
    deferred: int = 0  # too young to judge while other workers run (their answers may be on the way)

    def as_dict(self) -> dict[str, int]:
        return {
            "looked_for": self.looked_for,
            "aborted": len(self.aborted),
            "not_found": self.not_found,
            "deferred": self.deferred,
        }


async def abort_orphan_uploads(
    client: GrandChallengeClient,
    journal: Journal,
    *,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    worker_id: str,
) -> OrphanSweep:
    """Find and abort this job's orphan uploads. Lists the account's uploads only when the ledger holds a lost
    create: a run without one makes no request here.

    ``worker_id``: the sweeping worker (``gcbulk verify`` holds no lease). Cases other live workers hold are theirs:
    their unanswered creates may be on the wire right now; and while one of them has a create of some filename on the
    wire, an unknown upload of that filename may be theirs with its answer on the way, so this job's lost creates of
    that filename wait for a later sweep (the last worker's final sweep, or ``gcbulk verify``, has no one to wait
    for). Those leases are read here, *after* the creates, and again after the listing — never taken from before the
    sweep: a worker that claims a case and sends its create meanwhile would otherwise see its upload abandoned under
    it (its answer then fails the case: "cannot go from 'abandoned' to 'initialized'", seen with four workers)."""
    sweep = OrphanSweep()
    since = (now() - SWEPT_AFTER).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    lost = await journal.read(journal.ledger.unconfirmed_upload_creates, since=since)
    # Read after the creates: the claim of any case whose intent was recorded by then is in the ledger, and shows here
    # while that worker's lease lives.
    held = await journal.read(journal.ledger.cases_leased_elsewhere, worker_id)
    lost = [create for create in lost if create.case_id not in held]
    if not lost:
        return sweep
    sweep.looked_for = len(lost)
    log.info(
        "looking for %d upload(s) whose create was sent but never answered, among the account's uploads "
        "(one listing of at most the server's 2000)",
        len(lost),
    )
    known = await journal.read(journal.ledger.known_upload_pks)
    candidates: dict[str, list[tuple[datetime, dict[str, Any]]]] = {}
    seen: set[str] = set()
    async for upload in client.iterate_uploads():
        pk = str(upload.get("pk"))
        # Unordered lists may repeat a row across pages (docs/gc-api.md §10): each pk once.
        if pk in seen or pk in known or upload.get("status") != UPLOAD_INITIALIZED:
            continue
        seen.add(pk)
        created = parse_server_time(upload.get("created"))
        if created is not None and upload.get("filename"):
            candidates.setdefault(upload["filename"], []).append((created, upload))
    # Read after the listing: a create of theirs that the listing saw is still unconfirmed here, or its pk is known
    # by the time of the check just before an abort; and a case claimed during the listing is theirs now.
    held = await journal.read(journal.ledger.cases_leased_elsewhere, worker_id)
    busy = (
        {
            create.filename
            for create in await journal.read(journal.ledger.unconfirmed_upload_creates, since=since, only_cases=held)
        }
        if held
        else set()
    )
    for create in lost:
        intent = parse_server_time(create.intent_at)
        if create.case_id in held or create.filename in busy:
            sweep.deferred += 1
            continue
        match = None
        if intent is not None:
            near = sorted(
                (
                    (abs(created - intent), created, upload)
                    for created, upload in candidates.get(create.filename, ())
                    if abs(created - intent) <= MATCH_WINDOW
                ),
                key=lambda row: row[0],
            )
            for _, created, upload in near:
                # Known by now (a worker recorded its answer after the listing): not an orphan.
                if await journal.read(journal.ledger.upload_pk_known, str(upload.get("pk"))):
                    continue
                if await _still_empty(client, upload):
                    match = upload
                    candidates[create.filename].remove((created, upload))
                    break
        if match is None:
            sweep.not_found += 1
            await journal.record(
                step(
                    journal.ledger.orphan_upload_resolved,
                    create.upload_id,
                    pk=None,
                    s3_upload_id=None,
                    reason="the create never reached the server (no matching upload there)",
                )
            )
            continue
        try:
            await client.abort_multipart_upload(match)
        except (MultipartUploadVanished, UploadNoLongerOpen):
            pass  # swept or finished meanwhile: it no longer holds S3 parts either way
        sweep.aborted.append(str(match["pk"]))
        log.info("aborted upload %s (%s): the create of this job whose answer was lost", match["pk"], create.filename)
        await journal.record(
            step(
                journal.ledger.orphan_upload_resolved,
                create.upload_id,
                pk=str(match["pk"]),
                s3_upload_id=str(match.get("s3_upload_id") or ""),
                reason="orphan: its create's answer was lost; found on the server and aborted",
            )
        )
    journal.note_fields("orphan_uploads", sweep.as_dict())
    return sweep


async def _still_empty(client: GrandChallengeClient, upload: dict[str, Any]) -> bool:
    """An orphan of ours never got a part; an upload with parts belongs to a client that knows its pk."""
    try:
        return not await client.list_parts(UploadRef.of(upload))
    except (MultipartUploadVanished, UploadNoLongerOpen):
        return False
