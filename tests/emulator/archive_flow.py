"""Steps of the archive flows for the emulator's tests (docs/gc-api.md §12), on top of ``EmulatorClient``.

The example seed's archive has ``editor`` as editor, ``reader2`` as uploader and ``reader1`` as user (viewer);
``outsider`` is no member.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gcbulk.emulator.server import RunningEmulator
from gcbulk.emulator.store import Archive

if TYPE_CHECKING:
    from tests.emulator.conftest import EmulatorClient, Reply

ARCHIVE_SLUG = "example-archive"
ITEMS = "archives/items/"


def example_archive(emulator: RunningEmulator) -> Archive:
    archive = emulator.context.store.archive_by_slug(ARCHIVE_SLUG)
    assert archive is not None
    return archive


def site(client: EmulatorClient) -> str:
    """The site root the web pages and media are under (the API is at ``api/v1/`` below it)."""
    return client.emulator.base_url.removesuffix("api/v1/")


async def archive_api_url(client: EmulatorClient) -> str:
    reply = await client.call("GET", client.api(f"archives/?slug={ARCHIVE_SLUG}"))
    return reply.json()["results"][0]["api_url"]


async def create_item(client: EmulatorClient, user: str = "editor", **body: Any) -> dict[str, Any]:
    reply = await client.call(
        "POST", client.api(ITEMS), user=user, json_body={"archive": await archive_api_url(client), **body}
    )
    assert reply.status == 201, reply.body
    return reply.json()


async def get_item(client: EmulatorClient, pk: str, user: str = "editor") -> dict[str, Any]:
    reply = await client.call("GET", client.api(f"{ITEMS}{pk}/"), user=user)
    assert reply.status == 200, reply.body
    return reply.json()


async def wait_for_item_value(client: EmulatorClient, pk: str, socket: str) -> dict[str, Any]:
    found: dict[str, Any] = {}

    async def has_value() -> bool:
        for value in (await get_item(client, pk))["values"]:
            if value["interface"]["slug"] == socket:
                found.update(value)
                return True
        return False

    await client.eventually(has_value, f"a value for {socket} in archive item {pk}")
    return found


async def start_session(client: EmulatorClient, body: dict[str, Any], user: str = "editor") -> Reply:
    return await client.call("POST", client.api("cases/upload-sessions/"), user=user, json_body=body)
