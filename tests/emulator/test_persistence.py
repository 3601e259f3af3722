"""``--data-dir`` persistence (issue 15): what a client made before a restart is still there after it, signed by the
same CA; without it (the default in tests) a restart forgets everything."""

from __future__ import annotations

import ssl
from dataclasses import replace

import aiohttp

from gcbulk.emulator.context import EmulatorConfig
from gcbulk.emulator.persistence import save_state
from gcbulk.emulator.server import run_emulator

BODY = b"x" * 1024


async def _call(session, running, method, url, body=None):
    ssl_context = ssl.create_default_context(cafile=str(running.ca_file))
    headers = {"Authorization": f"Bearer {running.tokens['editor']}"}
    async with session.request(method, url, json=body, headers=headers, ssl=ssl_context) as response:
        return response.status, await response.json()


async def _make_things(running) -> dict:
    async with aiohttp.ClientSession() as session:
        status, upload = await _call(session, running, "POST", running.base_url + "uploads/", {"filename": "a.mha"})
        assert status == 201
        status, display_set = await _call(
            session,
            running,
            "POST",
            running.base_url + "reader-studies/display-sets/",
            {"reader_study": "example-study", "title": "kept"},
        )
        assert status == 201
        status, queued = await _call(
            session, running, "POST", running.base_url + "cases/upload-sessions/", {"uploads": []}
        )
        assert status == 201
        status, archives = await _call(session, running, "GET", running.base_url + "archives/?slug=example-archive")
        archive_url = archives["results"][0]["api_url"]
        status, item = await _call(
            session, running, "POST", running.base_url + "archives/items/", {"archive": archive_url, "title": "kept"}
        )
        assert status == 201
    # An archive item's POST shape has no api_url (docs/gc-api.md §12).
    item["api_url"] = running.base_url + f"archives/items/{item['pk']}/"
    return {"upload": upload, "display_set": display_set, "session": queued, "archive_item": item}


async def _still_there(running, made) -> list[int]:
    async with aiohttp.ClientSession() as session:
        statuses = [(await _call(session, running, "GET", made[name]["api_url"]))[0] for name in made]
        presign = (
            running.base_url + f"uploads/{made['upload']['pk']}/{made['upload']['s3_upload_id']}/"
            "generate-presigned-urls/"
        )
        statuses.append((await _call(session, running, "PATCH", presign, {"part_numbers": [1]}))[0])
    return statuses


async def test_a_restart_with_a_data_dir_keeps_state_and_ca(tmp_path):
    config = EmulatorConfig(data_dir=tmp_path / "kept", persist=True)
    async with run_emulator(config) as running:
        made = await _make_things(running)
        ca = running.ca_file.read_bytes()
    async with run_emulator(config) as restarted:
        assert restarted.ca_file.read_bytes() == ca
        # Same host and ports are not required: URLs are written with the host the client uses.
        made = {
            name: {**obj, "api_url": obj["api_url"].replace(running.base_url, restarted.base_url)}
            for name, obj in made.items()
        }
        assert await _still_there(restarted, made) == [200, 200, 200, 200, 200]


async def test_without_persistence_a_restart_forgets_everything(tmp_path):
    config = replace(EmulatorConfig(data_dir=tmp_path / "memory"), persist=False)
    async with run_emulator(config) as running:
        made = await _make_things(running)
    async with run_emulator(config) as restarted:
        made = {
            name: {**obj, "api_url": obj["api_url"].replace(running.base_url, restarted.base_url)}
            for name, obj in made.items()
        }
        assert await _still_there(restarted, made) == [404, 404, 404, 404, 404]


async def test_the_state_is_saved_while_the_upload_sweep_waits_on_the_clock(tmp_path):
    # The sweep subscribes to the clock (emulator/sweep.py) and the URL signer holds the clock: a save while the sweep
    # waited failed on pickling its listener (seen as a traceback from benchmarks/emulator_rss.py's emulator).
    config = EmulatorConfig(data_dir=tmp_path / "kept", persist=True)
    async with run_emulator(config) as running:
        made = await _make_things(running)
        running.context.clock.on_advance(lambda: None)
        save_state(running.context)
    async with run_emulator(config) as restarted:
        made = {
            name: {**obj, "api_url": obj["api_url"].replace(running.base_url, restarted.base_url)}
            for name, obj in made.items()
        }
        assert await _still_there(restarted, made) == [200, 200, 200, 200, 200]
