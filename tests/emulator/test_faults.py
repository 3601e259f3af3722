"""Fault injection (issue 3): injected statuses, 429 + Retry-After, resets mid-body, latency, bandwidth, replay."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace

import aiohttp
import pytest

from gcbulk.emulator.faults import (
    FaultConfigError,
    FaultPlan,
    FaultRule,
    load_fault_file,
)
from gcbulk.emulator.objects import IMAGES_BUCKET
from gcbulk.emulator.s3 import presigned_get_url
from gcbulk.emulator.server import run_emulator


async def set_faults(client, *rules: dict, seed: int | None = None) -> dict:
    body = {"rules": list(rules), **({"seed": seed} if seed is not None else {})}
    reply = await client.call("PUT", client.admin("faults"), json_body=body)
    assert reply.status == 200, reply.body
    return reply.json()


async def test_an_injected_429_carries_retry_after_and_stops_after_times(client):
    await set_faults(client, {"match": "POST /api/v1/uploads/", "status": 429, "retry_after": 7, "times": 1})
    limited = await client.call("POST", client.api("uploads/"), json_body={"filename": "ct.mha"})
    created = await client.call("POST", client.api("uploads/"), json_body={"filename": "ct.mha"})
    assert (limited.status, limited.headers["Retry-After"]) == (429, "7")
    assert created.status == 201
    listed = (await client.call("GET", client.api("uploads/"))).json()
    assert listed["count"] == 1  # the refused request did nothing


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_injected_errors_on_part_puts_are_s3_xml_and_store_nothing(client, status):
    upload = await client.create_upload()
    url = (await client.presign(upload, [1]))["1"]
    await set_faults(client, {"match": "PUT s3", "status": status})
    reply = await client.put(url, b"data")
    assert reply.status == status
    assert reply.headers["Content-Type"] == "application/xml" and b"<Error><Code>" in reply.body
    await client.call("DELETE", client.admin("faults"))
    assert await client.list_parts(upload) == []


async def test_injected_errors_on_the_api_look_like_the_proxy_in_front(client):
    await set_faults(client, {"match": "GET api", "status": 502})
    reply = await client.call("GET", client.api("uploads/"))
    assert reply.status == 502
    assert reply.headers["Content-Type"].startswith("text/html")
    assert "502 Bad Gateway" in reply.text


async def test_a_fault_after_the_handler_does_the_work_but_loses_the_answer(client):
    # docs/gc-api.md §5: a 502 after the server created something is how clients end up with duplicates.
    await set_faults(client, {"match": "POST /api/v1/uploads/", "status": 502, "phase": "after", "times": 1})
    lost = await client.call("POST", client.api("uploads/"), json_body={"filename": "ct.mha"})
    listed = (await client.call("GET", client.api("uploads/"))).json()
    assert lost.status == 502
    assert listed["count"] == 1 and listed["results"][0]["filename"] == "ct.mha"


async def test_a_reset_while_reading_a_part_stores_nothing(client, emulator):
    upload = await client.create_upload()
    url = (await client.presign(upload, [1]))["1"]
    # No "times": aiohttp itself silently retries an idempotent PUT once after a reset.
    await set_faults(client, {"match": "PUT s3", "reset": "request", "reset_at_fraction": 0.5})
    with pytest.raises(aiohttp.ClientError):
        await client.put(url, b"x" * 1_000_000)
    assert await client.list_parts(upload) == []
    await client.call("DELETE", client.admin("faults"))
    assert (await client.put(url, b"x" * 1_000_000)).status == 200
    assert emulator.context.counters.part_puts[(upload["pk"], 1)] == 1


async def test_a_reset_while_writing_a_response_cuts_the_body(client):
    for _ in range(30):
        await client.create_upload()
    await set_faults(client, {"match": "GET /api/v1/uploads/", "reset": "response", "reset_at_fraction": 0.3})
    with pytest.raises(aiohttp.ClientPayloadError):
        await client.call("GET", client.api("uploads/"))


async def test_a_reset_while_streaming_a_download_cuts_it(client, emulator):
    key = "images/aa/bb/image/file/ct.mha"
    path = emulator.context.objects.object_path(IMAGES_BUCKET, key)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"i" * 3_000_000)
    await set_faults(client, {"match": "GET s3", "reset": "response", "reset_at_fraction": 0.5})
    with pytest.raises(aiohttp.ClientPayloadError):
        await client.call("GET", presigned_get_url(emulator.context, IMAGES_BUCKET, key), user=None)


async def test_throttled_and_delayed_requests_still_arrive_intact(client):
    upload = await client.create_upload()
    url = (await client.presign(upload, [1]))["1"]
    await set_faults(
        client,
        {"match": "PUT s3", "bandwidth_bytes_per_second": 20_000_000},
        {"match": "PUT s3", "latency_seconds": 0.01},
    )
    data = bytes(range(256)) * 4000
    etag = (await client.put(url, data)).headers["ETag"]
    plan = (await client.call("GET", client.admin("faults"))).json()
    assert [rule["fired"] for rule in plan["rules"]] == [1, 1]
    assert [(p["ETag"], p["Size"]) for p in await client.list_parts(upload)] == [(etag, len(data))]


async def test_a_corrupt_body_fault_stores_other_bytes_and_answers_with_their_md5(client):
    upload = await client.create_upload()
    url = (await client.presign(upload, [1]))["1"]
    await set_faults(client, {"match": "PUT s3", "corrupt_body": True, "times": 1})
    data = bytes(range(256)) * 4000
    spoiled = (await client.put(url, data)).headers["ETag"]
    stored = bytes([data[0] ^ 0xFF]) + data[1:]
    assert spoiled == f'"{hashlib.md5(stored).hexdigest()}"'  # S3's ETag is of what it stored, not what was sent
    again = (await client.put(url, data)).headers["ETag"]  # times = 1: the next PUT is stored as sent
    assert again == f'"{hashlib.md5(data).hexdigest()}"'


def _decisions(plan: FaultPlan, count: int) -> list[int | None]:
    decisions = [plan.decide("PUT", "s3", "/uploads/uploads/1/x").terminal for _ in range(count)]
    return [rule.status if rule else None for rule in decisions]


def test_the_same_seed_replays_the_same_faults():
    rules = [FaultRule(match="PUT s3", probability=0.3, status=503)]
    first, again, other = FaultPlan(rules, seed=11), FaultPlan(rules, seed=11), FaultPlan(rules, seed=12)
    run = _decisions(first, 200)
    assert run == _decisions(again, 200)
    assert run != _decisions(other, 200)
    assert 20 < run.count(503) < 100


def test_skip_and_times_pick_exactly_which_requests_fail():
    plan = FaultPlan([FaultRule(match="PUT s3", status=500, skip=2, times=2)])
    assert _decisions(plan, 6) == [None, None, 500, 500, None, None]


def test_rules_match_by_method_and_site_or_path_glob():
    rule = FaultRule(match="PATCH */complete-multipart-upload/", status=500)
    assert rule.matches("PATCH", "api", "/api/v1/uploads/p/u/complete-multipart-upload/")
    assert not rule.matches("PATCH", "api", "/api/v1/uploads/p/u/abort-multipart-upload/")
    assert not rule.matches("GET", "api", "/api/v1/uploads/p/u/complete-multipart-upload/")
    assert FaultRule(match="* s3", status=500).matches("GET", "s3", "/images/x")
    assert not FaultRule(match="* s3", status=500).matches("GET", "api", "/api/v1/uploads/")


def test_fault_files_are_read_as_toml_or_json(tmp_path):
    toml_file = tmp_path / "faults.toml"
    toml_file.write_text('seed = 7\n[[rules]]\nmatch = "PUT s3"\nprobability = 0.2\nstatus = 503\nretry_after = 2\n')
    json_file = tmp_path / "faults.json"
    json_file.write_text(
        json.dumps({"rules": [{"match": "PUT s3", "probability": 0.2, "status": 503, "retry_after": "2"}]})
    )
    expected = FaultRule(match="PUT s3", probability=0.2, status=503, retry_after="2")
    assert load_fault_file(toml_file) == ([expected], 7)
    assert load_fault_file(json_file) == ([expected], None)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"match": "PUT s3", "stauts": 500}, "unknown field(s) ['stauts']"),
        ({"status": 500}, "missing 'match'"),
        ({"match": "PUT", "status": 500}, "write it as '<METHOD> <TARGET>'"),
        ({"match": "PUT s3", "probability": 2}, "probability must be between 0 and 1"),
        ({"match": "PUT s3", "status": 200}, "status must be an HTTP error status"),
        ({"match": "PUT s3", "reset": "both"}, "reset must be one of"),
        ({"match": "PUT s3", "status": 500, "reset": "request"}, "either status or reset"),
        ({"match": "PUT s3", "phase": "during"}, "phase must be one of"),
    ],
)
async def test_a_bad_fault_rule_is_refused_with_a_message_naming_it(client, tmp_path, entry, message):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"rules": [entry]}))
    with pytest.raises(FaultConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        load_fault_file(bad)
    reply = await client.call("PUT", client.admin("faults"), json_body={"rules": [entry]})
    assert reply.status == 400 and message in reply.json()["detail"]


async def test_a_missing_fault_file_is_named(tmp_path):
    with pytest.raises(FaultConfigError, match="does not exist"):
        load_fault_file(tmp_path / "nope.toml")


async def test_the_admin_endpoint_replaces_appends_and_clears_rules(client):
    await set_faults(client, {"match": "PUT s3", "status": 503}, seed=5)
    appended = (
        await client.call(
            "POST", client.admin("faults"), json_body={"rules": [{"match": "GET api", "latency_seconds": 0.5}]}
        )
    ).json()
    assert appended["seed"] == 5
    assert [rule["match"] for rule in appended["rules"]] == ["PUT s3", "GET api"]
    cleared = (await client.call("DELETE", client.admin("faults"))).json()
    assert cleared["rules"] == []
    seeding_by_append = await client.call("POST", client.admin("faults"), json_body={"seed": 1, "rules": []})
    assert seeding_by_append.status == 400


async def test_admin_routes_are_never_faulted(client):
    await set_faults(client, {"match": "* *", "status": 503})
    assert (await client.call("GET", client.api("uploads/"))).status == 503
    assert (await client.call("GET", client.admin("faults"))).status == 200
    assert (await client.call("DELETE", client.admin("faults"))).status == 200
    assert (await client.call("GET", client.api("uploads/"))).status == 200


async def test_faults_given_at_start_are_in_force(emulator_config, client):
    config = replace(
        emulator_config,
        data_dir=emulator_config.data_dir.with_name("second"),
        fault_rules=(FaultRule(match="GET api", status=504),),
        fault_seed=3,
    )
    async with run_emulator(config, tls=False) as second:
        reply = await client.call("GET", second.base_url + "uploads/")
        plan = second.context.faults.describe()
    assert reply.status == 504
    assert plan["seed"] == 3 and plan["rules"][0]["fired"] == 1


async def test_an_admin_token_guards_the_admin_routes(emulator_config, client):
    config = replace(emulator_config, data_dir=emulator_config.data_dir.with_name("guarded"), admin_token="s3cret")
    async with run_emulator(config, tls=False) as guarded:
        admin = guarded.admin_url + "faults"
        without = await client.call("GET", admin, user=None)
        user_token = await client.call("GET", admin, token=guarded.tokens["editor"])
        with_token = await client.call("GET", admin, token="s3cret")
    assert without.status == 401 and "admin token" in without.json()["detail"]
    assert user_token.status == 401
    assert with_token.status == 200
