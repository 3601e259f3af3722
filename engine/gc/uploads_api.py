"""The ``uploads/`` endpoints (docs/gc-api.md §1): S3 multipart uploads brokered by Grand Challenge.

A mixin of ``GrandChallengeClient`` (``engine/gc/client.py``), kept apart because it is its own concept: the multipart
life cycle create → presign → (PUT parts, ``engine/upload/s3_parts.py``) → list-parts → complete | abort.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from gcbulk.engine.gc.errors import (
    ApiError,
    MultipartUploadVanished,
    NotFound,
    UnsafeUrlError,
    UploadCapReached,
    UploadNoLongerOpen,
    UploadQuotaReached,
)

UPLOAD_COMPLETED = "Completed"
UPLOAD_INITIALIZED = "Initialized"


def parse_server_time(text: str | None) -> datetime | None:
    """An upload's ``created`` (DRF's ISO-8601, ``Z`` for UTC) as an aware datetime; None when absent or unreadable."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@dataclass(frozen=True)
class UploadRef:
    """What identifies a multipart upload (docs/gc-api.md §1: pk + s3_upload_id stay valid until completion or the
    24 h sweep)."""

    pk: str
    s3_upload_id: str

    @classmethod
    def of(cls, upload: UploadRef | Mapping[str, Any]) -> UploadRef:
        if isinstance(upload, UploadRef):
            return upload
        return cls(pk=str(upload["pk"]), s3_upload_id=str(upload["s3_upload_id"]))


def _vanished_on_404(upload: UploadRef) -> Callable[[ApiError], Exception | None]:
    def translate(error: ApiError) -> Exception | None:
        # docs/gc-api.md §1: a wrong s3_upload_id (after an abort) and a swept upload both answer 404.
        if error.status == 404:
            return MultipartUploadVanished(f"upload {upload.pk} no longer exists on the server ({error})")
        return None

    return translate


class UploadsMixin:
    """Needs ``request(method, path, json=, params=, reconcile=, translate=)``, ``url_for(path)``, ``iterate_all`` and
    ``base_url`` from the client; holds nothing of its own."""

    request: Callable[..., Awaitable[Any]]
    url_for: Callable[[str], str]
    iterate_all: Callable[..., AsyncIterator[dict[str, Any]]]
    base_url: str

    def upload_url(self, pk: str) -> str:
        """The hyperlink that display-set values and upload sessions take for an upload."""
        return self.url_for(f"uploads/{pk}/")

    async def create_upload(
        self, filename: str, *, before_resend: Callable[[], Awaitable[None]] | None = None
    ) -> dict[str, Any]:
        """``POST uploads/``: a new, Initialized multipart upload.

        Not reconciled by lookup: uploads carry no key of ours (every case has its ``ct.mha``), so a create whose
        answer was lost leaves an empty upload. ``before_resend`` runs before a create that may have reached the
        server is sent again: the caller records that doubt (``engine/upload/orphans.py`` finds and aborts such
        uploads). The caller records the pk the moment it is returned, before any part.
        """

        async def resend() -> None:
            if before_resend is not None:
                await before_resend()
            return None  # never found: the create is sent again

        def cap(error: ApiError) -> Exception | None:
            # docs/gc-api.md §1: the only non-field validation on create is the 2000-uploads cap.
            if error.status == 400 and isinstance(error.body, dict) and "non_field_errors" in error.body:
                return UploadCapReached(error.method, error.url, error.status, error.body, error.headers)
            return None

        answer: dict[str, Any] = await self.request(
            "POST", "uploads/", json={"filename": filename}, translate=cap, reconcile=resend
        )
        return answer

    async def get_upload(self, pk: str) -> dict[str, Any]:
        """Raises NotFound once the upload was consumed (import done) or swept."""
        answer: dict[str, Any] = await self.request("GET", f"uploads/{pk}/")
        return answer

    async def count_uploads(self) -> int:
        """How many uploads this user has: what the 2000 cap counts (docs/gc-api.md §1)."""
        page = await self.request("GET", "uploads/", params={"limit": 1, "offset": 0})
        return int(page.get("count", len(page.get("results", []))))

    async def iterate_uploads(self) -> AsyncIterator[dict[str, Any]]:
        """Every upload of this user (docs/gc-api.md §1: no filters, unordered; at most about the 2000 cap). Not for the
        hot path: only to find uploads whose create answer was lost (``engine/upload/orphans.py``)."""
        async for upload in self.iterate_all("uploads/"):
            yield upload

    async def generate_presigned_urls(
        self, upload: UploadRef | Mapping[str, Any], part_numbers: Iterable[int]
    ) -> dict[int, str]:
        """Presigned PUT URLs by part number (the server's keys are strings, docs/gc-api.md §1)."""
        ref = UploadRef.of(upload)
        vanished = _vanished_on_404(ref)

        def quota(error: ApiError) -> Exception | None:
            # docs/gc-api.md §1: presign on an Initialized upload answers 403 only when the byte quota is reached.
            if error.status == 403:
                return UploadQuotaReached(error.method, error.url, error.status, error.body, error.headers)
            return vanished(error)

        answer = await self.request(
            "PATCH",
            f"uploads/{ref.pk}/{ref.s3_upload_id}/generate-presigned-urls/",
            json={"part_numbers": sorted(set(part_numbers))},
            translate=quota,
            idempotent=True,  # asking for URLs again only signs them again
        )
        urls = {int(number): str(url) for number, url in answer["presigned_urls"].items()}
        for url in urls.values():
            self._check_upload_url(url)
        return urls

    def _check_upload_url(self, url: str) -> None:
        """A presigned part URL gcbulk may PUT the user's bytes to: https, or plain http only when the job's own
        base URL is http (the emulator on this machine). gcapi does not check them (docs/gc-api.md §5); the bytes are
        patient images, so a downgraded URL (a misconfigured endpoint, a proxy) stops the run instead."""
        parts = urlsplit(url)
        base_scheme = urlsplit(self.base_url).scheme
        if parts.scheme == "https" or (parts.scheme == "http" and base_scheme == "http"):
            if parts.hostname:
                return
        raise UnsafeUrlError(
            f"the server gave a part upload URL on {parts.scheme or 'no'} scheme ({parts.scheme}://{parts.netloc}"
            f"{parts.path}); gcbulk sends images over https only (plain http only when base_url is http). Check the "
            "server's object-store endpoint"
        )

    async def list_parts(self, upload: UploadRef | Mapping[str, Any]) -> list[dict[str, Any]]:
        """The parts S3 holds: ``[{"PartNumber", "ETag", "Size", ...}]``. MultipartUploadVanished if it is gone."""
        ref = UploadRef.of(upload)

        async def still_open() -> None:
            # docs/gc-api.md §1 "500 traps": list-parts on an upload that is no longer Initialized is a 500 that repeats
            # (e.g. a ledger restored from an older copy); a 500 on an open upload is transient and retried.
            try:
                current = await self.get_upload(ref.pk)
            except NotFound:
                raise MultipartUploadVanished(f"upload {ref.pk} no longer exists on the server") from None
            if current.get("status") != UPLOAD_INITIALIZED:
                raise UploadNoLongerOpen(ref.pk, str(current.get("status")))

        answer = await self.request(
            "GET",
            f"uploads/{ref.pk}/{ref.s3_upload_id}/list-parts/",
            translate=_vanished_on_404(ref),
            reconcile=still_open,
        )
        return list(answer.get("parts", []))

    async def complete_multipart_upload(
        self, upload: UploadRef | Mapping[str, Any], parts: Iterable[Mapping[str, Any]]
    ) -> dict[str, Any]:
        """Completes with ``parts`` sorted by part number (S3 requires ascending order)."""
        ref = UploadRef.of(upload)
        ordered = sorted(
            ({"ETag": p["ETag"], "PartNumber": int(p["PartNumber"])} for p in parts), key=lambda p: p["PartNumber"]
        )

        async def already_completed() -> dict[str, Any] | None:
            try:
                current = await self.get_upload(ref.pk)
            except NotFound:
                return None
            return current if current.get("status") == UPLOAD_COMPLETED else None

        try:
            answer: dict[str, Any] = await self.request(
                "PATCH",
                f"uploads/{ref.pk}/{ref.s3_upload_id}/complete-multipart-upload/",
                json={"parts": ordered},
                reconcile=already_completed,
                translate=_vanished_on_404(ref),
            )
            return answer
        except ApiError as error:
            # docs/gc-api.md §1 "500 traps": complete on an upload that is no longer Initialized answers 500 — which is
            # what a retried complete meets when its first try succeeded but the answer was lost.
            if error.status == 500 and (done := await already_completed()) is not None:
                return done
            raise

    async def abort_multipart_upload(self, upload: UploadRef | Mapping[str, Any]) -> dict[str, Any]:
        """Frees the upload's parts. Only for a fatal error of that file: an open upload is what resume needs."""
        ref = UploadRef.of(upload)
        answer: dict[str, Any] = await self.request(
            "PATCH", f"uploads/{ref.pk}/{ref.s3_upload_id}/abort-multipart-upload/", translate=_vanished_on_404(ref)
        )
        return answer
