"""The migration report's aggregates from the ledger (state/report_aggregates.py), on SQLite and PostgreSQL alike:
cases by state, reasons grouped, bytes and cases per time bucket, time per case, and every worker's run."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gcbulk.state.ledger import Ledger
from gcbulk.state.report_aggregates import bucket_seconds_for, case_times, ledger_picture, time_series
from tests.state.conftest import planned_case, record


def send(ledger: Ledger, title: str) -> int:
    case_id = ledger.case_id_by_title(title)
    ledger.case_started(case_id)
    work = ledger.case_work(case_id)
    for item in work.items:
        ledger.item_uploading(item.id)
        for file in item.files:
            upload = ledger.upload_creating(file.id, part_size=file.size)
            ledger.upload_initialized(upload, pk=f"up-{upload}", s3_upload_id=f"s3-{upload}")
            ledger.part_sent(upload, 1, size=file.size, etag=f'"e{upload}"')
            ledger.upload_completed(upload)
        ledger.item_uploaded(item.id)
    ledger.display_set_creating(case_id)
    ledger.display_set_created(case_id, f"ds-{case_id}")
    ledger.display_set_values_attached(case_id)
    ledger.display_set_importing(case_id)
    return case_id


def test_the_picture_of_a_job_from_its_ledger(ledger: Ledger) -> None:
    record(ledger, [planned_case(f"p{n}", {"ct-image": [("ct.mha", 100 * n)]}) for n in (1, 2, 3, 4)])
    ledger.register_worker("w-1", host="w", pid=1)
    for title in ("p1", "p2"):
        case_id = send(ledger, title)
        ledger.display_set_done(case_id)
        ledger.case_done(case_id)
    ledger.case_failed(send(ledger, "p3"), "display set ds-3: import failed: 'bad pixel type'")
    picture = ledger_picture(ledger)
    assert picture.cases_by_state == {"done": 2, "failed": 1, "planned": 1}
    assert (picture.files, picture.bytes_planned, picture.bytes_sent) == (4, 1000, 600)
    assert [(g.state, g.count, [c.title for c in g.cases]) for g in picture.reasons] == [("failed", 1, ["p3"])]
    assert picture.series is not None and sum(picture.series.bytes_sent) == 600
    assert sum(picture.series.cases_done) == 2
    assert picture.case_times is not None and picture.case_times.cases == 2
    assert [(w.worker_id, w.stopped_at) for w in picture.workers] == [("w-1", None)]


def test_an_empty_plan_draws_nothing_over_time(ledger: Ledger) -> None:
    record(ledger, [planned_case("p1")])
    picture = ledger_picture(ledger)
    assert (picture.series, picture.case_times, picture.first_at) == (None, None, None)
    assert picture.notes == ["Time charts: nothing was sent yet."]


@pytest.mark.parametrize(
    ("span_seconds", "bucket"),
    [(0, 1), (59, 1), (61, 2), (600, 10), (3600, 60), (86400, 1800), (3 * 86400, 7200), (400 * 86400, 576001)],
)
def test_time_buckets_are_round_and_about_sixty_to_a_chart(span_seconds: float, bucket: int) -> None:
    assert bucket_seconds_for(span_seconds) == bucket


def test_time_series_counts_bytes_and_cases_into_their_buckets() -> None:
    start = datetime(2026, 1, 1, 8, 0, 0, tzinfo=UTC)
    parts = [(start, 10), (start + timedelta(seconds=59), 5), (start + timedelta(seconds=61), 7)]
    series = time_series(parts, [start + timedelta(seconds=61)])
    assert series is not None
    assert (series.start, series.bucket_seconds) == (start, 2)
    assert (sum(series.bytes_sent), series.bytes_sent[0], series.bytes_sent[29], series.bytes_sent[30]) == (
        22,
        10,
        5,
        7,
    )
    assert series.cases_done[30] == 1


def test_case_times_fall_into_bars_with_median_and_p90() -> None:
    times = case_times([0.5, 3, 3, 40, 90000], edges=(1, 5, 60))
    assert times is not None
    assert times.counts == (1, 2, 1, 1)
    assert (times.median, times.p90, times.longest, times.cases) == (3, 90000, 90000, 5)
