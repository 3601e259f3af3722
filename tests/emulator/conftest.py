"""Fixtures for the emulator's tests: an HTTP client over the emulator's TLS, the upload steps of docs/gc-api.md §1, and
the real gcapi client."""

from __future__ import annotations

import asyncio
import json
import ssl
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest
from multidict import CIMultiDictProxy

from gcbulk.emulator.server import RunningEmulator

if TYPE_CHECKING:
    import gcapi


@dataclass
class Reply:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode()


@dataclass
class EmulatorClient:
    """Calls the emulator as a given user (``user=None`` for anonymous), over its TLS with its CA."""

    emulator: RunningEmulator
    session: aiohttp.ClientSession
    ssl_context: ssl.SSLContext | bool
    default_user: str | None = "editor"

    def api(self, path: str) -> str:
        return self.emulator.base_url + path.lstrip("/")

    def admin(self, path: str) -> str:
        return self.emulator.admin_url + path.lstrip("/")

    async def call(
        self,
        method: str,
        url: str,
        *,
        user: Any = ...,
        token: str | None = None,
        json_body: Any = None,
        data: Any = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        headers = dict(headers or {})
        who = self.default_user if user is ... else user  # ... means the default user, None anonymous
        if token is None and who is not None:
            token = self.emulator.tokens[who]
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        body = json.dumps(json_body).encode() if json_body is not None else data
        if json_body is not None:
            headers["Content-Type"] = "application/json"
        async with self.session.request(
            method, url, data=body, headers=headers, ssl=self.ssl_context, allow_redirects=False
        ) as response:
            return Reply(response.status, response.headers, await response.read())

    # -- the upload flow of docs/gc-api.md §1 -----------------------------------------------------------------------------

    async def create_upload(self, filename: str = "ct.mha", user: str | None = "editor") -> dict[str, Any]:
        reply = await self.call("POST", self.api("uploads/"), user=user, json_body={"filename": filename})
        assert reply.status == 201, reply.body
        return reply.json()

    def action_url(self, upload: dict[str, Any], action: str, s3_upload_id: str | None = None) -> str:
        upload_id = upload["s3_upload_id"] if s3_upload_id is None else s3_upload_id
        return self.api(f"uploads/{upload['pk']}/{upload_id}/{action}/")

    async def presign(self, upload: dict[str, Any], part_numbers: list[int], user: str = "editor") -> dict[str, str]:
        reply = await self.call(
            "PATCH",
            self.action_url(upload, "generate-presigned-urls"),
            user=user,
            json_body={"part_numbers": part_numbers},
        )
        assert reply.status == 200, reply.body
        return reply.json()["presigned_urls"]

    async def put(self, url: str, data: bytes, headers: dict[str, str] | None = None) -> Reply:
        """A part PUT as gcapi sends it: raw bytes, no Authorization header."""
        return await self.call("PUT", url, user=None, data=data, headers=headers)

    async def put_part(self, upload: dict[str, Any], number: int, data: bytes) -> str:
        url = (await self.presign(upload, [number]))[str(number)]
        reply = await self.put(url, data)
        assert reply.status == 200, reply.body
        return reply.headers["ETag"]

    async def list_parts(self, upload: dict[str, Any], user: str = "editor") -> list[dict[str, Any]]:
        reply = await self.call("GET", self.action_url(upload, "list-parts"), user=user)
        assert reply.status == 200, reply.body
        return reply.json()["parts"]

    async def complete(self, upload: dict[str, Any], parts: list[tuple[int, str]], user: str = "editor") -> Reply:
        body = {"parts": [{"ETag": etag, "PartNumber": number} for number, etag in parts]}
        return await self.call("PATCH", self.action_url(upload, "complete-multipart-upload"), user=user, json_body=body)

    async def abort(self, upload: dict[str, Any], user: str = "editor") -> Reply:
        return await self.call("PATCH", self.action_url(upload, "abort-multipart-upload"), user=user)

    @staticmethod
    async def eventually(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 60.0) -> None:
        """Polls ``check`` until it holds or the deadline passes (no fixed sleeps). The deadline only bounds a hang:
        on a loaded machine, with the suite's workers side by side, an import can take many times its usual second."""
        deadline = time.monotonic() + timeout
        while not await check():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}")
            await asyncio.sleep(0.02)

    async def completed_upload(self, data: bytes, filename: str = "ct.mha", user: str = "editor") -> dict[str, Any]:
        upload = await self.create_upload(filename, user=user)
        url = (await self.presign(upload, [1], user=user))["1"]
        etag = (await self.put(url, data)).headers["ETag"]
        reply = await self.complete(upload, [(1, etag)], user=user)
        assert reply.status == 200, reply.body
        return reply.json()


@pytest.fixture
async def client(emulator: RunningEmulator) -> AsyncIterator[EmulatorClient]:
    """An ``EmulatorClient`` on the in-process emulator; it trusts the emulator's CA and nothing else."""
    ssl_context: ssl.SSLContext | bool = (
        ssl.create_default_context(cafile=str(emulator.ca_file)) if emulator.ca_file else False
    )
    async with aiohttp.ClientSession() as session:
        yield EmulatorClient(emulator, session, ssl_context)


def gcapi_client(emulator: RunningEmulator, user: str) -> gcapi.Client:
    """gcapi 0.16.1 as ``user``, unmodified, over the emulator's TLS. The caller closes it (``open_gcapi_client`` does)."""
    import gcapi  # only the tests that drive gcapi pay for its import

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the version check must not even warn: the emulator reports 0.16.1
        return gcapi.Client(token=emulator.tokens[user], base_url=emulator.base_url, verify=str(emulator.ca_file))


@pytest.fixture
def open_gcapi_client(threaded_emulator: RunningEmulator) -> Iterator[Callable[[str], gcapi.Client]]:
    """Opens a gcapi client as ``user``; each is closed before the emulator stops (an open keep-alive connection
    left the emulator's TLS transports unclosed at its shutdown: a ResourceWarning on Python 3.13)."""
    opened: list[gcapi.Client] = []

    def open_as(user: str) -> gcapi.Client:
        opened.append(gcapi_client(threaded_emulator, user))
        return opened[-1]

    yield open_as
    for client in opened:
        client.close()
