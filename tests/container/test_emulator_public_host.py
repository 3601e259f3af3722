"""`gcbulk-emulator --public-host NAME`: in docker compose the other containers reach the emulator as `emulator`,
so its URLs and its TLS certificate must name that host, not the address it listens on."""

from __future__ import annotations

import asyncio
import json
import signal
import ssl
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
from cryptography import x509

PUBLIC_HOST = "emulator.gcbulk.test"  # .test is reserved (RFC 2606): never resolves, so the test forces the address


async def test_urls_and_the_certificate_name_the_public_host() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gcbulk.emulator.cli",
        "--host",
        "127.0.0.1",
        "--public-host",
        PUBLIC_HOST,
        "--port",
        "0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            line = await asyncio.wait_for(process.stdout.readline(), timeout=max(deadline - time.monotonic(), 0.1))
            assert line, (await process.stderr.read()).decode()
            if line.startswith(b"{"):
                ready = json.loads(line)
                break
        base, s3 = urlsplit(ready["base_url"]), urlsplit(ready["s3_url"])
        assert (base.scheme, base.hostname, s3.hostname) == ("https", PUBLIC_HOST, PUBLIC_HOST)

        # The leaf certificate beside the CA file (emulator/tls.py) holds the names a client checks.
        leaf = x509.load_pem_x509_certificate(Path(ready["ca_file"]).with_name("server.pem").read_bytes())
        names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert PUBLIC_HOST in names.get_values_for_type(x509.DNSName)
        assert "localhost" in names.get_values_for_type(x509.DNSName)  # the container's own healthcheck

        # Connect to the listening address while verifying the certificate for the public name, as a container on
        # the compose network does after resolving `emulator`.
        context = ssl.create_default_context(cafile=ready["ca_file"])
        url = f"https://127.0.0.1:{base.port}/api/v1/gcapi/"
        async with aiohttp.ClientSession() as session:
            async with session.get(url, ssl=context, server_hostname=PUBLIC_HOST) as response:
                assert response.status == 200
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == 0
