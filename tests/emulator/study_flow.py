"""Steps of the reader-study flows for the emulator's tests, on top of ``EmulatorClient`` (tests/emulator/conftest.py).

Each helper asserts the status the step must have, so a test reads as the sequence of things a client does.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from gcbulk.emulator.answer_types import ANSWER_TYPES
from gcbulk.emulator.server import RunningEmulator
from gcbulk.emulator.store import Option, Question, ReaderStudy, new_uuid

if TYPE_CHECKING:
    from tests.emulator.conftest import EmulatorClient

STUDY_SLUG = "example-study"
FINAL_SESSION_STATES = ("Succeeded", "Failed", "Cancelled")


def example_study(emulator: RunningEmulator) -> ReaderStudy:
    study = emulator.context.store.reader_study_by_slug(STUDY_SLUG)
    assert study is not None
    return study


def question_pk(emulator: RunningEmulator, answer_type: str) -> str:
    """The pk of the example study's (first) question of ``answer_type``."""
    store = emulator.context.store
    return next(pk for pk in example_study(emulator).question_pks if store.questions[pk].answer_type == answer_type)


def add_question_of_every_type(emulator) -> dict[str, str]:
    """Adds one question per answer type to the example study (in-process); returns answer type → question pk."""
    store = emulator.context.store
    study = example_study(emulator)
    added = {}
    for answer_type in ANSWER_TYPES:
        question = Question(
            pk=new_uuid(),
            reader_study_pk=study.pk,
            question_text=f"{answer_type}?",
            answer_type=answer_type,
            required=False,
            options=[Option(id=store.next_int_pk(), title=t) for t in ("yes", "no", "maybe")],
        )
        store.questions[question.pk] = question
        study.question_pks.append(question.pk)
        added[answer_type] = question.pk
    return added


async def create_display_set(client: EmulatorClient, user: str = "editor", **body: Any) -> dict[str, Any]:
    reply = await client.call(
        "POST", client.api("reader-studies/display-sets/"), user=user, json_body={"reader_study": STUDY_SLUG, **body}
    )
    assert reply.status == 201, reply.body
    return reply.json()


async def patch_display_set(client: EmulatorClient, pk: str, body: dict[str, Any], user: str = "editor") -> Any:
    return await client.call("PATCH", client.api(f"reader-studies/display-sets/{pk}/"), user=user, json_body=body)


async def get_display_set(client: EmulatorClient, pk: str, user: str = "editor") -> dict[str, Any]:
    reply = await client.call("GET", client.api(f"reader-studies/display-sets/{pk}/"), user=user)
    assert reply.status == 200, reply.body
    return reply.json()


async def upload_file(client: EmulatorClient, path: Path, user: str = "editor") -> dict[str, Any]:
    """A Completed upload of the file's bytes under its name (the whole docs/gc-api.md §1 flow, one part)."""
    return await client.completed_upload(path.read_bytes(), filename=path.name, user=user)


async def set_image_from_files(
    client: EmulatorClient, ds_pk: str, socket: str, paths: list[Path], user: str = "editor"
) -> dict[str, Any]:
    """Uploads the files and PATCHes them as ``user_uploads`` of ``socket`` (what gcapi's ImageCreateStrategy does)."""
    uploads = [await upload_file(client, path, user) for path in paths]
    value = {"interface": socket, "user_uploads": [upload["api_url"] for upload in uploads]}
    reply = await patch_display_set(client, ds_pk, {"values": [value]}, user=user)
    assert reply.status == 200, reply.body
    return reply.json()


async def wait_for_value(client: EmulatorClient, ds_pk: str, socket: str, user: str = "editor") -> dict[str, Any]:
    """Polls the display set until ``socket`` has a value (image and file values arrive after the import)."""
    found: dict[str, Any] = {}

    async def has_value() -> bool:
        for value in (await get_display_set(client, ds_pk, user))["values"]:
            if value["interface"]["slug"] == socket:
                found.update(value)
                return True
        return False

    await client.eventually(has_value, f"a value for {socket} in display set {ds_pk}")
    return found


async def session_for_display_set(emulator: RunningEmulator, ds_pk: str, socket: str) -> str:
    """The pk of the newest upload session the server made for a display-set socket."""
    sessions = [
        s
        for s in emulator.context.store.upload_sessions.values()
        if s.target_display_set_pk == ds_pk and s.target_socket_slug == socket
    ]
    assert sessions, f"no upload session targets {ds_pk}/{socket}"
    return max(sessions, key=lambda s: s.created).pk


async def wait_for_session(
    client: EmulatorClient, session_pk: str, user: str = "editor", until: tuple[str, ...] | None = None
) -> dict[str, Any]:
    """Polls ``cases/upload-sessions/{pk}/`` until it is Succeeded, Failed or Cancelled (docs/gc-api.md §2), or in ``until``.

    A session refused on linking shows Succeeded for a moment before it turns Failed (docs/gc-api.md §10): wait with
    ``until=("Failed",)`` for those.
    """
    found: dict[str, Any] = {}

    async def finished() -> bool:
        reply = await client.call("GET", client.api(f"cases/upload-sessions/{session_pk}/"), user=user)
        assert reply.status == 200, reply.body
        found.update(reply.json())
        return found["status"] in (until or FINAL_SESSION_STATES)

    await client.eventually(finished, f"upload session {session_pk} to finish")
    return found


async def admin_answer(client: EmulatorClient, **body: Any) -> dict[str, Any]:
    """Creates an answer through the emulator's test-only ``POST /_admin/answers``."""
    reply = await client.call("POST", client.admin("answers"), user=None, json_body=body)
    assert reply.status == 201, reply.body
    return reply.json()
