"""Fault injection: what the network and the infrastructure in front of Grand Challenge and S3 can do to a client.

A ``FaultPlan`` is a list of ``FaultRule``s, set at start (``--faults faults.toml`` or ``.json``) or at runtime
through ``PUT /_admin/faults``. Every request to either site (the ``/_admin/`` routes excepted) is checked against the
rules in order; each rule that matches and whose dice roll (``random.Random(seed)``, so a run replays) comes up fires:

* ``latency_seconds``: the request waits this long before it is handled (rules add up);
* ``bandwidth_bytes_per_second``: S3 part bodies are read, and S3 object bodies written, no faster (the lowest wins);
* ``corrupt_body``: an S3 part body is stored with its first byte flipped, and answered with the ETag (MD5) of what
  was stored — what a faulty proxy or disk in front of the store would do; the client must notice;
* ``status``: 500/502/503/504/429… answered instead of the real response, with ``retry_after`` as ``Retry-After``.
  ``phase = "after"`` runs the handler first, so its work is done but its answer is lost (a 502 after a create; not
  possible for an S3 object GET, whose body is already on its way);
* ``reset``: ``"request"`` aborts the connection after reading ``reset_at_fraction`` of the request body (the
  handler never runs); ``"response"`` runs the handler and aborts after sending that fraction of the response body.

Only the first firing rule with a ``status`` or ``reset`` applies it. ``skip`` lets that many matching requests
through before the rule may fire, ``times`` caps how often it fires: together they make exact, replayable scenarios.

``match`` is ``"<METHOD> <TARGET>"``: METHOD is an HTTP method or ``*``; TARGET is ``s3`` (any path on the S3 site),
``api`` (any path on the API site), ``*``, or a glob over the path where ``*`` also crosses ``/``, e.g.
``"PUT s3"``, ``"PATCH */complete-multipart-upload/"``, ``"POST /api/v1/uploads/"``, ``"* /api/v1/uploads/*"``.

TOML form (JSON: ``{"seed": 7, "rules": [{...}]}``)::

    seed = 7
    [[rules]]
    match = "PUT s3"
    probability = 0.2
    status = 503
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import random
import time
import tomllib
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from aiohttp import web

from gcbulk.emulator.http import SITE, SITE_S3

ADMIN_PREFIX = "/_admin/"
RESETS = ("request", "response")
PHASES = ("before", "after")

_REASONS = {
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Temporarily Unavailable",
    504: "Gateway Time-out",
}
_S3_CODES = {429: "SlowDown", 500: "InternalError", 502: "BadGateway", 503: "SlowDown", 504: "GatewayTimeout"}


class FaultConfigError(ValueError):
    """A fault rule that cannot be used; the message names the rule and the field to fix."""


@dataclass(frozen=True, kw_only=True)
class FaultRule:
    match: str
    probability: float = 1.0
    status: int | None = None
    retry_after: str | None = None
    reset: str | None = None
    reset_at_fraction: float = 0.5
    latency_seconds: float = 0.0
    bandwidth_bytes_per_second: float | None = None
    corrupt_body: bool = False
    phase: str = "before"
    skip: int = 0
    times: int | None = None

    def __post_init__(self) -> None:
        method, _, target = self.match.strip().partition(" ")
        if not method or not target.strip():
            raise FaultConfigError(f"fault rule match {self.match!r}: write it as '<METHOD> <TARGET>', e.g. 'PUT s3'")
        if not 0.0 <= self.probability <= 1.0:
            raise FaultConfigError(f"fault rule {self.match!r}: probability must be between 0 and 1")
        if self.status is not None and not 400 <= self.status <= 599:
            raise FaultConfigError(f"fault rule {self.match!r}: status must be an HTTP error status (400-599)")
        if self.reset is not None and self.reset not in RESETS:
            raise FaultConfigError(f"fault rule {self.match!r}: reset must be one of {RESETS}")
        if self.reset is not None and self.status is not None:
            raise FaultConfigError(f"fault rule {self.match!r}: choose either status or reset, not both")
        if not 0.0 <= self.reset_at_fraction <= 1.0:
            raise FaultConfigError(f"fault rule {self.match!r}: reset_at_fraction must be between 0 and 1")
        if self.phase not in PHASES:
            raise FaultConfigError(f"fault rule {self.match!r}: phase must be one of {PHASES}")
        if self.latency_seconds < 0 or self.skip < 0 or (self.times is not None and self.times < 0):
            raise FaultConfigError(f"fault rule {self.match!r}: latency_seconds, skip and times cannot be negative")
        if self.bandwidth_bytes_per_second is not None and self.bandwidth_bytes_per_second <= 0:
            raise FaultConfigError(f"fault rule {self.match!r}: bandwidth_bytes_per_second must be positive")

    @classmethod
    def from_mapping(cls, entry: Mapping[str, Any], where: str = "rule") -> FaultRule:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(entry) - known)
        if unknown:
            raise FaultConfigError(f"{where}: unknown field(s) {unknown}; known fields are {sorted(known)}")
        if "match" not in entry:
            raise FaultConfigError(f"{where}: missing 'match', e.g. match = \"PUT s3\"")
        values = dict(entry)
        if values.get("retry_after") is not None:
            values["retry_after"] = str(values["retry_after"])
        try:
            return cls(**values)
        except TypeError as error:
            raise FaultConfigError(f"{where}: {error}") from None

    def matches(self, method: str, site: str, path: str) -> bool:
        rule_method, _, target = self.match.strip().partition(" ")
        target = target.strip()
        if rule_method != "*" and rule_method.upper() != method.upper():
            return False
        if target in ("api", "s3"):
            return site == target
        return target == "*" or fnmatch.fnmatchcase(path, target)


@dataclass
class RuleCounts:
    matched: int = 0
    fired: int = 0


@dataclass
class Faults:
    """What the plan decided for one request."""

    latency_seconds: float = 0.0
    bandwidth_bytes_per_second: float | None = None
    corrupt_body: bool = False
    terminal: FaultRule | None = None


class FaultPlan:
    def __init__(self, rules: Iterable[FaultRule] = (), seed: int = 0) -> None:
        self.replace(rules, seed)

    def replace(self, rules: Iterable[FaultRule], seed: int | None = None) -> None:
        self.rules = list(rules)
        self.counts = [RuleCounts() for _ in self.rules]
        if seed is not None:
            self.seed = seed
            self.random = random.Random(seed)

    def add(self, rules: Iterable[FaultRule]) -> None:
        for rule in rules:
            self.rules.append(rule)
            self.counts.append(RuleCounts())

    def decide(self, method: str, site: str, path: str) -> Faults:
        decision = Faults()
        for rule, counts in zip(self.rules, self.counts, strict=True):
            if not rule.matches(method, site, path):
                continue
            counts.matched += 1
            terminal = rule.status is not None or rule.reset is not None
            if counts.matched <= rule.skip or (rule.times is not None and counts.fired >= rule.times):
                continue
            if terminal and decision.terminal is not None:
                continue
            if self.random.random() >= rule.probability:
                continue
            counts.fired += 1
            decision.latency_seconds += rule.latency_seconds
            if rule.bandwidth_bytes_per_second is not None:
                current = decision.bandwidth_bytes_per_second
                decision.bandwidth_bytes_per_second = min(current or float("inf"), rule.bandwidth_bytes_per_second)
            decision.corrupt_body = decision.corrupt_body or rule.corrupt_body
            if terminal:
                decision.terminal = rule
        return decision

    def describe(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "rules": [
                {**{k: v for k, v in asdict(rule).items() if v is not None}, "matched": c.matched, "fired": c.fired}
                for rule, c in zip(self.rules, self.counts, strict=True)
            ],
        }


FAULT_PLAN = web.AppKey("fault_plan", FaultPlan)


def parse_fault_document(document: Mapping[str, Any], where: str = "faults") -> tuple[list[FaultRule], int | None]:
    """``{"seed": 7, "rules": [...]}`` → rules and seed (None when absent)."""
    rules = document.get("rules", [])
    if not isinstance(rules, list):
        raise FaultConfigError(f"{where}: 'rules' must be a list of tables")
    seed = document.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise FaultConfigError(f"{where}: 'seed' must be an integer")
    parsed = []
    for index, entry in enumerate(rules):
        if not isinstance(entry, Mapping):
            raise FaultConfigError(f"{where}: rules[{index}] must be a table")
        parsed.append(FaultRule.from_mapping(entry, f"{where}: rules[{index}]"))
    return parsed, seed


def load_fault_file(path: Path) -> tuple[list[FaultRule], int | None]:
    """Reads a TOML or (by suffix ``.json``) JSON fault file."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise FaultConfigError(f"fault file {path} does not exist; pass an existing .toml or .json file") from None
    try:
        document = json.loads(raw) if path.suffix.lower() == ".json" else tomllib.loads(raw.decode())
    except (ValueError, tomllib.TOMLDecodeError) as error:
        raise FaultConfigError(f"fault file {path} cannot be parsed: {error}") from None
    if not isinstance(document, Mapping):
        raise FaultConfigError(f"fault file {path}: expected a table with 'rules'")
    return parse_fault_document(document, str(path))


# -- shaping streamed bodies ----------------------------------------------------------------------------------------


class BodyShaper:
    """Paces streamed bodies and cuts a response body short; the S3 handlers call it for every chunk.

    Pacing is a few lines of arithmetic on the loop clock rather than a rate-limiter library: one stream, one rate,
    no sharing between requests.
    """

    def __init__(self, bandwidth: float | None = None, reset_at_fraction: float | None = None) -> None:
        self.bandwidth = bandwidth
        self.reset_at_fraction = reset_at_fraction
        self._started = time.monotonic()
        self._bytes = 0
        self._sent = 0

    async def pace(self, nbytes: int) -> None:
        if self.bandwidth is None:
            return
        self._bytes += nbytes
        ahead = self._bytes / self.bandwidth - (time.monotonic() - self._started)
        if ahead > 0:
            await asyncio.sleep(ahead)

    async def write(self, request: web.Request, response: web.StreamResponse, chunk: bytes) -> bool:
        """Writes ``chunk`` (paced); False when the injected reset cut the connection instead."""
        keep = len(chunk)
        if self.reset_at_fraction is not None and response.content_length is not None:
            keep = min(keep, max(int(response.content_length * self.reset_at_fraction) - self._sent, 0))
        await self.pace(keep)
        if keep:
            await response.write(chunk[:keep])
            self._sent += keep
        if keep < len(chunk):
            _abort(request)
            return False
        return True


SHAPER_KEY = web.RequestKey("body_shaper", BodyShaper)
# A ``corrupt_body`` rule fired for this request: the S3 part handler stores other bytes than it received.
CORRUPT_BODY_KEY = web.RequestKey("corrupt_body", bool)


def shaper_of(request: web.Request) -> BodyShaper:
    return request.get(SHAPER_KEY) or BodyShaper()


def _abort(request: web.Request) -> None:
    if request.transport is not None:
        request.transport.abort()


def fault_response(status: int, site: str, retry_after: str | None) -> web.Response:
    """What a proxy (nginx in front of the API) or S3 would send: HTML for the API, S3's XML on the S3 site."""
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    reason = _REASONS.get(status, "Error")
    if site == SITE_S3:
        body = (
            f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{_S3_CODES.get(status, "InternalError")}'
            f"</Code><Message>{reason} (injected fault)</Message></Error>"
        )
        return web.Response(status=status, body=body.encode(), content_type="application/xml", headers=headers)
    body = (
        f"<html>\r\n<head><title>{status} {reason}</title></head>\r\n<body>\r\n<center><h1>{status} {reason}"
        f"</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
    )
    return web.Response(status=status, text=body, content_type="text/html", headers=headers)


async def _reset_while_reading(request: web.Request, fraction: float) -> web.Response:
    to_read = int((request.content_length or 0) * fraction)
    while to_read > 0:
        chunk = await request.content.read(min(to_read, 1024**2))
        if not chunk:
            break
        to_read -= len(chunk)
    _abort(request)
    return web.Response(status=499)  # never sent: the connection is gone


async def _reset_while_writing(
    request: web.Request, response: web.StreamResponse, fraction: float
) -> web.StreamResponse:
    if response.prepared or not isinstance(response, web.Response) or response.body is None:
        return response  # a streamed body was already cut by the handler through its BodyShaper
    body = bytes(response.body)  # type: ignore[arg-type]
    partial = web.StreamResponse(status=response.status, reason=response.reason, headers=response.headers)
    partial.content_length = len(body)
    await partial.prepare(request)
    await partial.write(body[: int(len(body) * fraction)])
    _abort(request)
    return partial


@web.middleware
async def fault_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    plan = request.app.get(FAULT_PLAN)
    if plan is None or request.path.startswith(ADMIN_PREFIX):
        return await handler(request)
    site = request.app[SITE]
    decision = plan.decide(request.method, site, request.path)
    rule = decision.terminal
    request[SHAPER_KEY] = BodyShaper(
        decision.bandwidth_bytes_per_second,
        rule.reset_at_fraction if rule is not None and rule.reset == "response" else None,
    )
    request[CORRUPT_BODY_KEY] = decision.corrupt_body
    if decision.latency_seconds:
        await asyncio.sleep(decision.latency_seconds)
    if rule is not None and rule.reset == "request":
        return await _reset_while_reading(request, rule.reset_at_fraction)
    if rule is not None and rule.status is not None and rule.phase == "before":
        return fault_response(rule.status, site, rule.retry_after)
    try:
        response = await handler(request)
    except web.HTTPException as exception:  # e.g. the emulated 500s: still a response to cut or replace
        if rule is None:
            raise
        response = exception
    if rule is not None and rule.reset == "response":
        return await _reset_while_writing(request, response, rule.reset_at_fraction)
    if rule is not None and rule.status is not None and not response.prepared:
        return fault_response(rule.status, site, rule.retry_after)
    return response
