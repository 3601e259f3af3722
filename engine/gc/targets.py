"""The target of a job as one seam of the upload core: a reader study's display sets or an archive's items.

Both are the same kind of thing on the server (docs/gc-api.md §12: the archive item serializers share the display sets'
``CIVSetPostSerializerMixin``): a titled container of socket values, created empty, filled by a values PATCH or by
upload sessions aimed at it, its title unique in its study or archive. What differs is said here and nowhere else:
the routes, how the create names its owner (a slug / an API URL), the upload session's target field
(``display_set`` / ``archive_item``), the right to add (editor / ``upload_archive``), and answers (items have none).

The rest of the engine — planning, the ledger, uploads, imports, verify and reconcile, adoption rules, resume — calls a
``Target`` and never knows which one it has.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any, Protocol

import anyio

from gcbulk.engine.gc.client import GrandChallengeClient, display_set_title
from gcbulk.engine.gc.display_set_create import TitledCreate, create_titled, lost_create_contradiction
from gcbulk.engine.gc.errors import ApiError, ConfigurationError, Disposition, GcbulkError, classify
from gcbulk.engine.gc.target_ref import TargetRef

log = logging.getLogger(__name__)

ITEMS = "archives/items/"


class Target(Protocol):
    """Where a job's cases go, as the upload core uses it. A "container" is a display set or an archive item."""

    ref: TargetRef

    async def lookup(self) -> dict[str, Any]:
        """The study or archive; ConfigurationError naming it when this user cannot see it (cached)."""
        ...

    async def require_writer(self, *, consequence: str) -> None:
        """Raises ConfigurationError when this token's user may not add containers (found out creating none)."""
        ...

    def iterate_containers(self) -> AsyncIterator[dict[str, Any]]: ...

    async def find_by_title(self, title: str) -> dict[str, Any] | None: ...

    async def create(self, title: str, order: int | None) -> dict[str, Any]:
        """An empty container titled ``title``; TitleTaken when another holds the title (engine/gc/display_set_create.py)."""
        ...

    async def get(self, pk: str) -> dict[str, Any]: ...

    def lost_create_contradiction(self, found: dict[str, Any], *, order: int | None) -> str | None:
        """Why ``found`` (titled like a create whose answer was lost) cannot be what ``create(title, order)`` made."""
        ...

    async def update(
        self, pk: str, *, values: list[dict[str, Any]] | None = None, title: str | None = None, retries: bool = True
    ) -> dict[str, Any]:
        """A PATCH (never PUT: a PUT removes the sockets it does not list, docs/gc-api.md §3, §12)."""
        ...

    async def has_answers(self, pk: str) -> bool: ...

    @property
    def session_field(self) -> str:
        """The upload session's field naming a container (docs/gc-api.md §2, §12): ``display_set`` / ``archive_item``."""
        ...

    def container_path(self, pk: str) -> str:
        """The container's API path, relative to the API root."""
        ...


def target_for(client: GrandChallengeClient, ref: TargetRef) -> Target:
    return ArchiveTarget(client, ref) if ref.is_archive else ReaderStudyTarget(client, ref)


class ReaderStudyTarget:
    """A reader study: display sets (docs/gc-api.md §3); the client's display set calls."""

    session_field = "display_set"

    def __init__(self, client: GrandChallengeClient, ref: TargetRef) -> None:
        self.client = client
        self.ref = ref

    async def lookup(self) -> dict[str, Any]:
        return await self.client.reader_study_by_slug(self.ref.slug)

    async def require_writer(self, *, consequence: str) -> None:
        await self.client.require_editor(self.ref.slug, consequence=consequence)

    async def iterate_containers(self) -> AsyncIterator[dict[str, Any]]:
        study = await self.lookup()
        async for display_set in self.client.iterate_display_sets(study["pk"]):
            yield display_set

    async def find_by_title(self, title: str) -> dict[str, Any] | None:
        return await self.client.find_display_set_by_title((await self.lookup())["pk"], title)

    async def create(self, title: str, order: int | None) -> dict[str, Any]:
        return await self.client.create_display_set(self.ref.slug, title, order=order)

    async def get(self, pk: str) -> dict[str, Any]:
        return await self.client.get_display_set(pk)

    def lost_create_contradiction(self, found: dict[str, Any], *, order: int | None) -> str | None:
        return lost_create_contradiction(found, order=order)

    async def update(
        self, pk: str, *, values: list[dict[str, Any]] | None = None, title: str | None = None, retries: bool = True
    ) -> dict[str, Any]:
        return await self.client.update_display_set(pk, values=values, title=title, retries=retries)

    async def has_answers(self, pk: str) -> bool:
        return await self.client.display_set_has_answers(pk)

    def container_path(self, pk: str) -> str:
        return f"reader-studies/display-sets/{pk}/"


class ArchiveTarget:
    """An archive: archive items (docs/gc-api.md §12)."""

    session_field = "archive_item"

    def __init__(self, client: GrandChallengeClient, ref: TargetRef) -> None:
        self.client = client
        self.ref = ref
        self._archive: dict[str, Any] | None = None
        self._lookup_lock = anyio.Lock()  # concurrent cases asking at once make one request, not one each

    async def lookup(self) -> dict[str, Any]:
        async with self._lookup_lock:
            if self._archive is None:
                page = await self.client.request("GET", "archives/", params={"slug": self.ref.slug})
                results = page.get("results", [])
                if not results:
                    # §12: an archive the user is no member of is absent from the list, as if it did not exist.
                    raise ConfigurationError(
                        f"archive {self.ref.slug!r} was not found at {self.client.base_url}: check the slug (the last "
                        "part of its URL) and that this token's user is an editor or uploader of the archive"
                    )
                self._archive = results[0]
        return self._archive

    async def require_writer(self, *, consequence: str) -> None:
        """The item create is refused on ``archive`` without ``upload_archive`` (docs/gc-api.md §12). The probe's
        ``title`` is not a string, so the server refuses it whatever the rights, and DRF reports every field's errors
        at once: an ``archive`` error among them means "not an uploader or editor"."""
        archive = await self.lookup()
        body = {"archive": archive["api_url"], "title": ["gcbulk permission check"]}
        try:
            created = await self.client.request("POST", ITEMS, json=body)
        except ApiError as error:
            if error.status == 400 and isinstance(error.body, dict):
                if "archive" not in error.body:
                    return
                raise ConfigurationError(
                    f"this token's user may not add items to archive {self.ref.slug!r}: the user must be an uploader "
                    f"or editor of the archive (the upload_archive permission; ask one of its editors); {consequence}"
                ) from None
            if classify(error) is Disposition.STOP_RUN:
                raise
            log.warning("could not check the right to add archive items (%s); going on", error)
            return
        except GcbulkError as unsure:
            if classify(unsure) is Disposition.STOP_RUN:
                raise
            log.warning("could not check the right to add archive items (%s); going on", unsure)
            return
        raise ApiError(
            "POST",
            self.client.url_for(ITEMS),
            201,
            f"the server accepted an archive item with a list for a title (pk {created.get('pk')}); "
            "it does not behave as Grand Challenge does",
        )

    async def iterate_containers(self) -> AsyncIterator[dict[str, Any]]:
        archive = await self.lookup()
        async for item in self.client.iterate_all(ITEMS, {"archive": archive["pk"]}):
            yield item

    async def find_by_title(self, title: str) -> dict[str, Any] | None:
        async for item in self.iterate_containers():
            if display_set_title(item) == title:
                return item
        return None

    async def create(self, title: str, order: int | None) -> dict[str, Any]:
        """An empty item; ``order`` is a reader study's and has no place here (items have none, §12)."""
        archive = await self.lookup()

        async def find() -> dict[str, Any] | None:
            return await self.find_by_title(title)

        create = TitledCreate(
            path=ITEMS,
            body={"archive": archive["api_url"], "title": title},  # a hyperlink, not the slug (§12)
            title=title,
            order=None,
            owner_field="archive",
            not_allowed=f"this token's user may not add items to archive {self.ref.slug!r}",
            remedy="make the user an uploader or editor of the archive",
        )
        return await create_titled(self.client, create, find)

    async def get(self, pk: str) -> dict[str, Any]:
        item: dict[str, Any] = await self.client.request("GET", self.container_path(pk))
        return item

    def lost_create_contradiction(self, found: dict[str, Any], *, order: int | None) -> str | None:
        return lost_create_contradiction(found, order=None)  # the create sends no order (items have none, §12)

    async def update(
        self, pk: str, *, values: list[dict[str, Any]] | None = None, title: str | None = None, retries: bool = True
    ) -> dict[str, Any]:
        body: dict[str, Any] = {}
        if values is not None:
            body["values"] = values
        if title is not None:
            body["title"] = title
        item: dict[str, Any] = await self.client.request("PATCH", self.container_path(pk), json=body, retries=retries)
        return item

    async def has_answers(self, pk: str) -> bool:
        return False  # §12: items are always editable; nothing is answered on them

    def container_path(self, pk: str) -> str:
        return f"{ITEMS}{pk}/"
