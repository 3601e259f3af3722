"""``POST reader-studies/display-sets/``: a refused create is never a create whose answer was lost.

The title is unique per reader study (docs/gc-api.md §9), so the title is how a create finds its display set again.
Two things must not be confused:

* **an answer**: the server spoke and did not create (a 400 for a duplicate title; its HTML 500 when a concurrent
  create of the same title passed the uniqueness check and lost on the database constraint, docs/gc-api.md §10, §11).
  The display set that holds the title is someone else's — another job racing on the same study, or a person. It is
  named (``TitleTaken``) and never filled.
* **a lost answer**: no answer came back (a dropped connection, a timeout) or a gateway in front of the server
  answered for it (502/503/504: the server behind it may have acted). Only then is the display set found by title
  taken as this create's, and only when it shows nothing that contradicts that (``lost_create_contradiction``):
  a create leaves an empty display set with the ``order`` it sent.

A 500 whose look finds no display set with the title did not create one either: it is sent again (nothing can double).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import anyio

from gcbulk.engine.gc.errors import ApiError, ConfigurationError, GcbulkError
from gcbulk.engine.gc.retry import RetryPolicy, current_budget

PATH = "reader-studies/display-sets/"


class CreateApi(Protocol):
    """What ``create_titled`` needs of a client: its retry policy and one request (any titled create, display set or
    archive item, goes through it)."""

    retry_policy: RetryPolicy

    async def request(
        self,
        method: str,
        path_or_url: str,
        *,
        json: Any = None,
        reconcile: Callable[[], Awaitable[Any]] | None = None,
        translate: Callable[[ApiError], Exception | None] | None = None,
    ) -> Any: ...


class DisplaySetApi(CreateApi, Protocol):
    """What a create needs of ``GrandChallengeClient`` (which calls this module, so it is not imported here)."""

    async def reader_study_by_slug(self, slug: str) -> dict[str, Any]: ...

    async def find_display_set_by_title(self, reader_study_pk: str, title: str) -> dict[str, Any] | None: ...


class TitleTaken(GcbulkError):
    """The study holds a display set with this title that this create did not make (the server refused the create,
    or a lost create's look found one that contradicts it). ``pk`` names it; ``why`` says how we know."""

    def __init__(self, title: str, pk: str, why: str) -> None:
        super().__init__(f"the display set titled {title!r} is pk {pk}, not this create's: {why}")
        self.title = title
        self.pk = pk
        self.why = why


class _Refused(Exception):
    """The server's own answer to the create: it did not create (carried past the retry loop, which must not
    reconcile it as a lost answer)."""

    def __init__(self, error: ApiError) -> None:
        super().__init__(str(error))
        self.error = error


def lost_create_contradiction(display_set: dict[str, Any], *, order: int | None) -> str | None:
    """Why ``display_set`` (found by title after a create whose answer was lost) cannot be what that create made,
    or None when nothing on the server contradicts it. A create makes an empty display set (values are only added
    by a later PATCH, docs/gc-api.md §3) with the ``order`` it sent."""
    values = display_set.get("values") or []
    if values:
        return f"it already holds {len(values)} value(s), and the create sends none"
    if order is not None and display_set.get("order") != order:
        return f"its order is {display_set.get('order')}, and the create sent {order}"
    return None


async def create_display_set(
    client: DisplaySetApi, reader_study_slug: str, title: str, order: int | None = None
) -> dict[str, Any]:
    """Creates an empty display set titled ``title`` and returns it; see the module docstring.

    Raises TitleTaken when the study already holds a display set with this title that this create did not make,
    ConfigurationError when the token's user may not add display sets, the server's ApiError for other refusals."""
    study = await client.reader_study_by_slug(reader_study_slug)

    async def find() -> dict[str, Any] | None:
        return await client.find_display_set_by_title(study["pk"], title)

    body: dict[str, Any] = {"reader_study": reader_study_slug, "title": title}
    if order is not None:
        body["order"] = order
    # docs/gc-api.md §0: a user who is not an editor of the study gets 400 on reader_study; no case can succeed.
    return await create_titled(
        client,
        TitledCreate(
            path=PATH,
            body=body,
            title=title,
            order=order,
            owner_field="reader_study",
            not_allowed=f"this token's user may not add display sets to reader study {reader_study_slug!r}",
            remedy="make the user an editor of the study",
        ),
        find,
    )


@dataclass(frozen=True, kw_only=True)
class TitledCreate:
    """One create of a titled container (a display set, or an archive item, docs/gc-api.md §12: the same rules)."""

    path: str
    body: dict[str, Any]
    title: str
    order: int | None  # what the create sends, for ``lost_create_contradiction`` (archive items have none)
    owner_field: str  # the body field a user without the right is refused on (``reader_study``, ``archive``)
    not_allowed: str  # "this token's user may not add … to …"
    remedy: str  # what to do about it


async def create_titled(
    client: CreateApi, create: TitledCreate, find: Callable[[], Awaitable[dict[str, Any] | None]]
) -> dict[str, Any]:
    """Sends ``create`` until the server answers; a refusal is never taken for a lost answer (module docstring).
    ``find`` looks the title up on the server."""
    title = create.title

    async def lost_answer_lookup() -> dict[str, Any] | None:
        found = await find()
        if found is None:
            return None
        why_not = lost_create_contradiction(found, order=create.order)
        if why_not is not None:
            raise TitleTaken(title, str(found["pk"]), f"the create's answer was lost and {why_not}")
        return found

    def refused(error: ApiError) -> Exception | None:
        if error.status == 400 and isinstance(error.body, dict) and create.owner_field in error.body:
            return ConfigurationError(f"{create.not_allowed} ({error.body[create.owner_field]}); {create.remedy}")
        # docs/gc-api.md §9: a duplicate title is 400 non_field_errors; §10/§11: a concurrent one is the server's
        # HTML 500 (IntegrityError). Both are the server's answer: it did not create.
        if error.status == 500 or (
            error.status == 400 and isinstance(error.body, dict) and "non_field_errors" in error.body
        ):
            return _Refused(error)
        return None

    attempt = 0
    while True:
        try:
            created: dict[str, Any] = await client.request(
                "POST", create.path, json=create.body, reconcile=lost_answer_lookup, translate=refused
            )
            return created
        except _Refused as refusal:
            holder = await find()
            if holder is not None:
                raise TitleTaken(
                    title, str(holder["pk"]), f"the server refused this create ({refusal.error.status})"
                ) from None
            if refusal.error.status != 500:
                raise refusal.error from None
            # A 500 that left no container with this title created nothing: sending it again cannot double it.
            current_budget(client.retry_policy, f"POST {create.path}").spend(refusal.error)
            await anyio.sleep(client.retry_policy.backoff(attempt))
            attempt += 1
