"""``gcbulk-emulator``: what it prints, that it serves what it printed, and that it stops cleanly on a signal."""

from __future__ import annotations

import asyncio
import json
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

STARTUP_TIMEOUT = 60.0


async def _start(*arguments: str) -> tuple[asyncio.subprocess.Process, list[str], dict]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gcbulk.emulator.cli",
        "--port",
        "0",
        *arguments,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    lines: list[str] = []
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while True:
        remaining = deadline - time.monotonic()
        line = (await asyncio.wait_for(process.stdout.readline(), timeout=max(remaining, 0.1))).decode()
        if not line:
            raise AssertionError(f"the emulator exited early: {(await process.stderr.read()).decode()}")
        if line.startswith("{"):
            return process, lines, json.loads(line)
        lines.append(line.rstrip("\n"))


async def _stop(process: asyncio.subprocess.Process, signum: int) -> tuple[int, str]:
    process.send_signal(signum)
    stdout, _ = await asyncio.wait_for(process.communicate(), timeout=30)
    return process.returncode, stdout.decode()


async def test_the_cli_prints_urls_ca_file_and_tokens_and_serves_until_sigterm():
    process, lines, ready = await _start()
    try:
        text = "\n".join(lines)
        assert ready["event"] == "ready"
        assert ready["base_url"].startswith("https://127.0.0.1:") and ready["base_url"].endswith("/api/v1/")
        assert ready["s3_url"].startswith("https://127.0.0.1:")
        assert ready["tokens"]["editor"] == "demo-editor-token"
        for expected in (
            ready["base_url"],
            ready["s3_url"],
            f"export SSL_CERT_FILE={ready['ca_file']}",
            "demo-reader1-token",
        ):
            assert expected in text
        context = ssl.create_default_context(cafile=ready["ca_file"])
        async with aiohttp.ClientSession() as session:
            async with session.get(ready["base_url"] + "gcapi/", ssl=context) as response:
                assert response.status == 200
            async with session.get(
                ready["base_url"] + "uploads/", ssl=context, headers={"Authorization": "Bearer demo-editor-token"}
            ) as response:
                assert (await response.json())["count"] == 0
    finally:
        code, rest = await _stop(process, signal.SIGTERM)
    assert code == 0 and "stopped" in rest
    assert not Path(ready["data_dir"]).exists()  # the default data dir is temporary


async def test_the_cli_takes_plain_http_faults_and_expiry_options_and_stops_on_sigint(tmp_path):
    faults = tmp_path / "faults.toml"
    faults.write_text('seed = 4\n[[rules]]\nmatch = "GET /api/v1/uploads/"\nstatus = 503\nretry_after = 1\n')
    data_dir = tmp_path / "data"
    process, _, ready = await _start(
        "--plain-http", "--faults", str(faults), "--presign-expiry", "60", "--data-dir", str(data_dir)
    )
    try:
        assert ready["base_url"].startswith("http://") and ready["ca_file"] is None
        headers = {"Authorization": "Bearer demo-editor-token"}
        async with aiohttp.ClientSession(headers=headers) as session:
            async with session.get(ready["base_url"] + "uploads/") as response:
                assert (response.status, response.headers["Retry-After"]) == (503, "1")
            async with session.post(ready["base_url"] + "uploads/", json={"filename": "ct.mha"}) as response:
                upload = await response.json()
            action = f"{ready['base_url']}uploads/{upload['pk']}/{upload['s3_upload_id']}/generate-presigned-urls/"
            async with session.patch(action, json={"part_numbers": [1]}) as response:
                url = (await response.json())["presigned_urls"]["1"]
            async with session.get(ready["admin_url"] + "clock") as response:
                now = (await response.json())["timestamp"]
            async with session.get(ready["admin_url"] + "faults") as response:
                assert (await response.json())["seed"] == 4
        expires = int(parse_qs(urlsplit(url).query)["X-Amz-Expires"][0])
        assert 50 < expires - now <= 61
    finally:
        code, _ = await _stop(process, signal.SIGINT)
    assert code == 0
    assert data_dir.is_dir()  # a given data dir is kept


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--faults", "{tmp}/missing.toml"], "does not exist"),
        (["--faults", "{tmp}/bad.json"], "unknown field(s) ['statuss']"),
        (["--seed-study", "{tmp}/missing-seed.toml"], "does not exist; pass an existing TOML file to --seed-study"),
    ],
)
def test_the_cli_refuses_bad_configuration_with_exit_2_and_a_message(tmp_path, arguments, message):
    (tmp_path / "bad.json").write_text(json.dumps({"rules": [{"match": "PUT s3", "statuss": 500}]}))
    result = subprocess.run(
        [sys.executable, "-m", "gcbulk.emulator.cli", "--port", "0", *(a.format(tmp=tmp_path) for a in arguments)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert message in result.stderr
