"""Runs the emulator's two sites (API and S3) on loopback; used by the CLI, the tests and the benchmarks."""

from __future__ import annotations

import asyncio
import concurrent.futures
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from gcbulk.emulator.app import build_api_app, build_s3_app
from gcbulk.emulator.context import LOOPBACK, Context, EmulatorConfig
from gcbulk.emulator.persistence import load_state
from gcbulk.emulator.seed import EXAMPLE_SEED, apply_seed, load_seed
from gcbulk.emulator.tls import TlsFiles, generate_tls_files


@dataclass(frozen=True)
class RunningEmulator:
    context: Context
    base_url: str  # the API root, ending in "/api/v1/" as gcapi requires
    s3_url: str
    tls: TlsFiles | None

    @property
    def tokens(self) -> dict[str, str]:
        """username -> token, for the users of the seed."""
        return {user.username: user.token for user in self.context.store.users_by_token.values()}

    @property
    def ca_file(self) -> Path | None:
        return self.tls.ca_file if self.tls else None

    @property
    def admin_url(self) -> str:
        return self.base_url.replace("/api/v1/", "/_admin/")


def free_port() -> int:
    """A port free now, for a process that binds it itself (a metrics address, a stand-in server). It can be taken
    in between — an outgoing connection may get it as its local port — so the emulator never uses this for its own
    sites: it binds first (``listening_socket``)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound and listening on ``host:port`` (0: a port the kernel picks), ours from this moment."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


@asynccontextmanager
async def run_emulator(
    config: EmulatorConfig,
    *,
    seed: dict[str, Any] | None = None,
    host: str = LOOPBACK,
    port: int = 0,
    s3_port: int = 0,
    tls: bool = True,
    public_host: str | None = None,
) -> AsyncIterator[RunningEmulator]:
    """Starts the API and S3 sites, yields their URLs, and stops them on exit.

    ``public_host`` is the name clients use (in every URL the emulator emits and in its certificate), when that is
    not the listening address: ``--host 0.0.0.0 --public-host emulator`` in a container network.
    """
    context = Context(config=config)
    if not (config.persist and load_state(context)):
        apply_seed(context.store, seed if seed is not None else load_seed(EXAMPLE_SEED))
    url_host = public_host or host
    tls_files = (
        generate_tls_files(config.data_dir / "tls", extra_hosts=[url_host], keep_ca=config.persist) if tls else None
    )
    ssl_context = tls_files.server_context() if tls_files else None
    scheme = "https" if tls_files else "http"

    # Bound before the URLs are known, not probed for and bound later: a probed port can be taken in between.
    api_socket = listening_socket(host, port)
    try:
        s3_socket = listening_socket(host, s3_port)
    except BaseException:
        api_socket.close()
        raise
    port, s3_port = api_socket.getsockname()[1], s3_socket.getsockname()[1]
    context.s3_base_url = f"{scheme}://{url_host}:{s3_port}"

    api_runner = web.AppRunner(build_api_app(context), access_log=None)
    s3_runner = web.AppRunner(build_s3_app(context), access_log=None)
    await api_runner.setup()
    await s3_runner.setup()
    try:
        await web.SockSite(api_runner, api_socket, ssl_context=ssl_context).start()
        await web.SockSite(s3_runner, s3_socket, ssl_context=ssl_context).start()
        yield RunningEmulator(
            context=context,
            base_url=f"{scheme}://{url_host}:{port}/api/v1/",
            s3_url=context.s3_base_url,
            tls=tls_files,
        )
    finally:
        await api_runner.cleanup()
        await s3_runner.cleanup()
        api_socket.close()  # already closed by its site once started; not when a start failed
        s3_socket.close()


@contextmanager
def emulator_in_thread(config: EmulatorConfig, **options: Any) -> Iterator[RunningEmulator]:
    """Runs the emulator on its own event loop in a daemon thread, for synchronous callers (gcapi, subprocess tests)."""
    loop = asyncio.new_event_loop()
    started: concurrent.futures.Future[RunningEmulator] = concurrent.futures.Future()
    stop = asyncio.Event()

    async def serve() -> None:
        try:
            async with run_emulator(config, **options) as running:
                started.set_result(running)
                await stop.wait()
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting caller
            if not started.done():
                started.set_exception(exc)
            raise

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True, name="emulator")
    thread.start()
    try:
        yield started.result(timeout=30)
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=30)
        loop.close()
