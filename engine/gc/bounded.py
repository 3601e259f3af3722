"""What the client accepts from a server, and whom it trusts: answers read with a size cap, the system's certificate
authorities plus an optional private one, and the loopback test that allows plain http only on this machine.
(Issue 14: a hostile or broken server must meet bounded memory and a clear error.)"""

from __future__ import annotations

import functools
import ipaddress
import ssl
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp

from gcbulk.engine.gc.errors import ConfigurationError, ResponseTooLarge

# docs/gc-api.md §0 pages of 1000 rows stay far below this; a larger answer is a misbehaving server or proxy.
DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024 * 1024


def trust_context(ca_file: Path | None) -> ssl.SSLContext:
    """The system's trusted authorities, plus ``ca_file``'s when given. Added, never in place of them: with
    ``create_default_context(cafile=…)`` the private CA would *replace* the system store, and the object store and
    signed-download hosts (public S3) would stop verifying (issue 14).

    One context per CA file as it is now, shared by every client of the process: loading the system store costs
    15–40 ms of CPU (OpenSSL parses every certificate of the bundle), and a process that opens a client per poll, per
    command or per test paid it each time. A context is never changed after it is made (``client.py`` hands it to
    aiohttp's connector as it is), so sharing it is safe; a CA file replaced or edited is another key (its inode,
    size and mtime), so it is read again."""
    if ca_file is None:
        return _trust_context(None, None)
    try:
        stat = ca_file.stat()
    except OSError:
        return _new_trust_context(ca_file)  # says why (missing, unreadable) as the uncached path does
    return _trust_context(ca_file, (stat.st_ino, stat.st_size, stat.st_mtime_ns))


@functools.lru_cache(maxsize=8)
def _trust_context(ca_file: Path | None, identity: tuple[int, int, int] | None) -> ssl.SSLContext:
    return _new_trust_context(ca_file)


def _new_trust_context(ca_file: Path | None) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if ca_file is None:
        return context
    try:
        context.load_verify_locations(cafile=str(ca_file))
    except FileNotFoundError:
        raise ConfigurationError(
            f"ca_file {ca_file} does not exist; set ca_file (or GCBULK_CA_FILE) to the PEM "
            "file of the server's certificate authority"
        ) from None
    except (ssl.SSLError, ValueError, OSError) as error:
        raise ConfigurationError(
            f"ca_file {ca_file} is not a PEM file of CA certificates ({error}); set ca_file (or GCBULK_CA_FILE) to "
            "the certificate authority's PEM file, or remove it to trust only the system's authorities"
        ) from None
    return context


async def read_capped(response: aiohttp.ClientResponse, limit: int, what: str) -> bytes:
    """The body of ``response``, refusing one longer than ``limit`` bytes before it is read whole: an announced
    Content-Length is checked first, and a body without one (or lying about it) is counted as it streams."""
    if response.content_length is not None and response.content_length > limit:
        raise ResponseTooLarge(
            f"{what}: the answer announces {response.content_length} bytes, more than the {limit} gcbulk accepts"
        )
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(256 * 1024):
        size += len(chunk)
        if size > limit:
            raise ResponseTooLarge(f"{what}: the answer is longer than the {limit} bytes gcbulk accepts")
        chunks.append(chunk)
    return b"".join(chunks)


def is_loopback_host(host: str | None) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False


def is_loopback_url(url: str) -> bool:
    return is_loopback_host(urlsplit(url).hostname)
