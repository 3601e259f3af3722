"""Under the capacity profile the emulator counts the server's own time: seconds an API worker was held, by endpoint
(``busy_seconds``), and seconds import workers were held (``import_busy_seconds``) — what the benchmarks divide by
the cases to compare clients by the server time they cost (issue 16)."""

from __future__ import annotations

import pytest

from gcbulk.emulator.capacity import profile_named

POST_DISPLAY_SET = "POST api:/api/v1/reader-studies/display-sets/"


pytestmark = pytest.mark.emulator(capacity=profile_named("real"))


async def test_each_request_adds_its_service_time_to_its_endpoints_busy_seconds(client, emulator) -> None:
    for _ in range(3):
        reply = await client.call(
            "POST", client.api("reader-studies/display-sets/"), json_body={"reader_study": "example-study"}
        )
        assert reply.status == 201, reply.body
    snapshot = (await client.call("GET", client.admin("counters"))).json()
    # docs/gc-api.md §10: a display-set POST holds a worker 105 ms; three of them 0.315 s, and nothing else was asked.
    # The emulator counts its model's time, not the wall's, so a loaded test machine does not change the sum.
    assert snapshot["busy_seconds"][POST_DISPLAY_SET] == pytest.approx(3 * 0.105)
    assert set(snapshot["busy_seconds"]) == {POST_DISPLAY_SET}
    assert snapshot["import_busy_seconds"] == 0
    # One at a time, no request waited for a worker: time in the server is the work itself.
    assert snapshot["api_latency_ratio"] == {"p50": 1.0, "p90": 1.0}

    reset = (await client.call("DELETE", client.admin("counters"))).json()
    assert reset["busy_seconds"] == {} and reset["import_busy_seconds"] == 0 and reset["api_latency_ratio"] is None
