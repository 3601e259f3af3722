"""A hostile Grand Challenge in front of the emulator: an aiohttp reverse proxy on 127.0.0.1 (plain http, which the
client allows on loopback) that passes most calls through and, on the routes a test names, answers with the caller's
Authorization header echoed into the error body, or with other hostile answers (endless bodies, lying lengths,
redirects to other schemes, huge JSON, wrong shapes)."""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

from gcbulk.emulator.server import RunningEmulator, listening_socket

Trick = Callable[[web.Request], Awaitable[web.StreamResponse | None]]


def echo_authorization(status: int) -> Trick:
    async def trick(request: web.Request) -> web.Response:
        header = request.headers.get("Authorization", "")
        token = header.split()[-1] if header else ""
        return web.json_response(
            {"detail": f"denied for {header}", "non_field_errors": [token, f"t={token};"]}, status=status
        )

    return trick


@dataclass
class Hostile:
    upstream: RunningEmulator
    tricks: dict[tuple[str, str], Trick] = field(default_factory=dict)  # (method, path suffix) -> answer
    base_url: str = ""
    hits: list[str] = field(default_factory=list)

    def trick_for(self, request: web.Request) -> Trick | None:
        for (method, suffix), trick in self.tricks.items():
            if method == request.method and request.path.endswith(suffix):
                return trick
        return None


def _app(hostile: Hostile) -> web.Application:
    upstream = hostile.upstream.base_url.split("/api/v1/")[0]
    context = ssl.create_default_context(cafile=str(hostile.upstream.ca_file))

    async def handle(request: web.Request) -> web.StreamResponse:
        hostile.hits.append(f"{request.method} {request.path}")
        trick = hostile.trick_for(request)
        if trick is not None:
            answer = await trick(request)
            if answer is not None:
                return answer
        headers = {
            k: v
            for k, v in request.headers.items()
            if k.lower() in ("authorization", "accept", "range", "content-type")
        }
        async with aiohttp.ClientSession() as session:
            async with session.request(
                request.method,
                upstream + request.path_qs,
                data=await request.read(),
                headers=headers,
                ssl=context,
                allow_redirects=False,
            ) as response:
                body = await response.read()
                out_headers = {
                    k: v
                    for k, v in response.headers.items()
                    if k.lower() in ("content-type", "location", "etag", "retry-after")
                }
                origin = hostile.base_url.split("/api/v1/")[0]
                body = body.replace(upstream.encode(), origin.encode())
                if "Location" in out_headers:
                    out_headers["Location"] = out_headers["Location"].replace(upstream, origin)
                return web.Response(status=response.status, body=body, headers=out_headers)

    app = web.Application(client_max_size=1024**3)
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


@contextmanager
def hostile_server(upstream: RunningEmulator) -> Iterator[Hostile]:
    """The hostile proxy on a thread (the commands under test run as subprocesses)."""
    hostile = Hostile(upstream)
    # Bound now, not probed for and bound later: with the suite's workers side by side, a probed port can be taken.
    sock = listening_socket("127.0.0.1", 0)
    hostile.base_url = f"http://127.0.0.1:{sock.getsockname()[1]}/api/v1/"
    loop = asyncio.new_event_loop()
    started = threading.Event()
    runner = web.AppRunner(_app(hostile))

    async def start() -> None:
        await runner.setup()
        await web.SockSite(runner, sock).start()
        started.set()

    thread = threading.Thread(target=lambda: (loop.run_until_complete(start()), loop.run_forever()), daemon=True)
    thread.start()
    if not started.wait(30):
        raise RuntimeError("the hostile server did not start within 30 s")
    try:
        yield hostile
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
