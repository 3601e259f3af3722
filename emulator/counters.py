"""What the emulator has seen, for tests and benchmarks to assert on (``GET /_admin/counters``).

``requests`` counts every request by ``"<METHOD> <site>:<route pattern>"``, e.g.
``"PATCH api:/api/v1/uploads/{pk}/{s3_upload_id}/complete-multipart-upload/"`` or ``"PUT s3:/{bucket}/{key}"``
(unrouted paths count under their raw path). ``part_puts`` counts the part PUTs S3 *stored* per (upload pk, part
number), ``part_put_attempts`` every signed part PUT that reached the body: a resumed transfer that re-sends no
completed part leaves every ``part_puts`` value at 1.

Under the capacity profile (``emulator/capacity.py``) the server's own time is counted too: ``busy_seconds`` by
endpoint (as ``requests``), the seconds the model holds an API worker for (the endpoint's service time plus what the
queue adds; read from the profile, not the wall, so a loaded test machine does not inflate it), and
``import_busy_seconds``, the seconds import workers were held (build, link, and the lock contention of
docs/gc-api.md §10). Benchmarks divide both by the cases. ``api_latency_ratio`` gives the median and p90 of each API
request's time in the server (its wait for a worker + its held time) over its work alone: 1.0 when no request ever
waited for a worker.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from gcbulk.emulator.http import SITE


@dataclass
class Counters:
    requests: Counter[str] = field(default_factory=Counter)
    part_puts: Counter[tuple[str, int]] = field(default_factory=Counter)
    part_put_attempts: Counter[tuple[str, int]] = field(default_factory=Counter)
    busy_seconds: Counter[str] = field(default_factory=Counter)
    import_busy_seconds: float = 0.0
    latency_ratios: list[float] = field(default_factory=list)
    # The most uploads each user held at once (user pk -> count): what the 2000-upload cap of docs/gc-api.md §1 counts.
    peak_uploads_per_user: Counter[int] = field(default_factory=Counter)
    # The most API requests served at once under the capacity profile (at most its API workers; the rest queue).
    peak_api_serving: int = 0

    def uploads_held(self, user_pk: int, count: int) -> None:
        self.peak_uploads_per_user[user_pk] = max(self.peak_uploads_per_user[user_pk], count)

    def reset(self) -> None:
        self.requests.clear()
        self.busy_seconds.clear()
        self.import_busy_seconds = 0.0
        self.latency_ratios.clear()
        self.part_puts.clear()
        self.part_put_attempts.clear()
        self.peak_uploads_per_user.clear()
        self.peak_api_serving = 0

    def snapshot(self) -> dict[str, Any]:
        def by_upload(counter: Counter[tuple[str, int]]) -> dict[str, dict[str, int]]:
            nested: dict[str, dict[str, int]] = {}
            for (upload_pk, part_number), count in sorted(counter.items()):
                nested.setdefault(upload_pk, {})[str(part_number)] = count
            return nested

        return {
            "requests": dict(sorted(self.requests.items())),
            "part_puts": by_upload(self.part_puts),
            "part_put_attempts": by_upload(self.part_put_attempts),
            "busy_seconds": {name: round(seconds, 6) for name, seconds in sorted(self.busy_seconds.items())},
            "import_busy_seconds": round(self.import_busy_seconds, 6),
            "api_latency_ratio": _percentiles(self.latency_ratios),
            "peak_uploads_per_user": {str(user): n for user, n in sorted(self.peak_uploads_per_user.items())},
            "peak_api_serving": self.peak_api_serving,
        }


def _percentiles(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    ordered = sorted(values)
    return {"p50": round(ordered[len(ordered) // 2], 3), "p90": round(ordered[int(len(ordered) * 0.9)], 3)}


COUNTERS = web.AppKey("counters", Counters)


def endpoint_name(request: web.Request) -> str:
    resource = request.match_info.route.resource
    pattern = resource.canonical if resource is not None else request.path
    return f"{request.method} {request.app[SITE]}:{pattern}"


@web.middleware
async def counting_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    counters = request.app.get(COUNTERS)
    if counters is not None and not request.path.startswith("/_admin/"):
        counters.requests[endpoint_name(request)] += 1
    return await handler(request)
