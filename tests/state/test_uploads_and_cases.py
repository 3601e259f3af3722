"""The transitions the transfer engine takes, end to end through the ledger: uploads, parts, items, display sets."""

from __future__ import annotations

import hashlib

import pytest

from gcbulk.state.ledger import (
    ConflictingRepeat,
    Ledger,
    LedgerError,
    LiveUploadExists,
    UploadNotOpen,
    composite_checksum,
)
from tests.state.conftest import MiB, planned_case, record


def _file_id(ledger: Ledger, case_id: int = 1, item: int = 0) -> int:
    return ledger.case_work(case_id).items[item].files[0].id


def _upload_all_parts(ledger: Ledger, upload_id: int, sizes: list[int]) -> list[str]:
    md5s = []
    for number, size in enumerate(sizes, 1):
        md5 = hashlib.md5(bytes([number]) * size).hexdigest()
        ledger.part_sent(upload_id, number, size=size, etag=f'"{md5}"', md5=md5)
        md5s.append(md5)
    return md5s


def test_upload_is_recorded_before_the_post_and_resumed_with_its_parts(one_case: Ledger) -> None:
    ledger = one_case
    file_id = _file_id(ledger)
    upload_id = ledger.upload_creating(file_id, part_size=5 * MiB)
    assert ledger.upload_creating(file_id, part_size=5 * MiB) == upload_id  # the intent is idempotent
    assert ledger.live_upload_count() == 1
    ledger.upload_initialized(upload_id, pk="u-1", s3_upload_id="s3-1", created_at="2025-11-14T10:00:00.000000Z")
    ledger.part_sent(upload_id, 2, size=5 * MiB, etag='"b"', md5="b" * 32)
    upload = ledger.case_work(1).items[0].files[0].upload
    assert upload is not None
    assert (upload.pk, upload.s3_upload_id, upload.part_size, upload.part_count) == ("u-1", "s3-1", 5 * MiB, 3)
    assert upload.created_at == "2025-11-14T10:00:00.000000Z"
    assert upload.missing_part_numbers == [1, 3]
    assert upload.parts[2].etag == '"b"'


def test_completing_records_the_files_multipart_checksum(one_case: Ledger) -> None:
    ledger = one_case
    upload_id = ledger.upload_creating(_file_id(ledger), part_size=5 * MiB)
    ledger.upload_initialized(upload_id, pk="u-1", s3_upload_id="s3-1")
    md5s = _upload_all_parts(ledger, upload_id, [5 * MiB, 5 * MiB, 2 * MiB])
    assert ledger.upload_completed(upload_id) is True
    assert ledger.upload_completed(upload_id) is False
    file = ledger.case_work(1).items[0].files[0]
    assert file.checksum == composite_checksum(md5s)
    assert file.checksum.endswith("-3")


def test_an_upload_with_parts_missing_cannot_complete(one_case: Ledger) -> None:
    ledger = one_case
    upload_id = ledger.upload_creating(_file_id(ledger), part_size=5 * MiB)
    ledger.upload_initialized(upload_id, pk="u-1", s3_upload_id="s3-1")
    _upload_all_parts(ledger, upload_id, [5 * MiB])
    with pytest.raises(LedgerError, match=r"parts \[2, 3\] of 3 have no ETag"):
        ledger.upload_completed(upload_id)


def test_a_file_with_a_live_upload_gets_no_second_one(one_case: Ledger) -> None:
    ledger = one_case
    file_id = _file_id(ledger)
    upload_id = ledger.upload_creating(file_id, part_size=5 * MiB)
    with pytest.raises(ConflictingRepeat, match="part_size"):
        ledger.upload_creating(file_id, part_size=8 * MiB)
    ledger.upload_initialized(upload_id, pk="u-1", s3_upload_id="s3-1")
    with pytest.raises(LiveUploadExists, match="already has upload .* 'initialized'; resume it"):
        ledger.upload_creating(file_id, part_size=5 * MiB)
    ledger.upload_expired(upload_id, "404 after the 24 h sweep")
    assert ledger.live_upload_count() == 0
    assert ledger.upload_creating(file_id, part_size=5 * MiB) != upload_id


def test_upload_recorded_with_another_pk_is_refused(one_case: Ledger) -> None:
    ledger = one_case
    upload_id = ledger.upload_creating(_file_id(ledger), part_size=5 * MiB)
    ledger.upload_initialized(upload_id, pk="u-1", s3_upload_id="s3-1")
    assert ledger.upload_initialized(upload_id, pk="u-1", s3_upload_id="s3-1") is False
    with pytest.raises(ConflictingRepeat, match="pk"):
        ledger.upload_initialized(upload_id, pk="u-2", s3_upload_id="s3-1")


def test_part_repeat_is_a_no_op_and_another_etag_is_refused(one_case: Ledger) -> None:
    ledger = one_case
    upload_id = ledger.upload_creating(_file_id(ledger), part_size=5 * MiB)
    ledger.upload_initialized(upload_id, pk="u-1", s3_upload_id="s3-1")
    assert ledger.part_sent(upload_id, 1, size=5 * MiB, etag='"a"', md5="a" * 32) is True
    assert ledger.part_sent(upload_id, 1, size=5 * MiB, etag='"a"', md5="a" * 32) is False
    with pytest.raises(ConflictingRepeat, match="etag"):
        ledger.part_sent(upload_id, 1, size=5 * MiB, etag='"z"', md5="z" * 32)


def test_invalidated_part_is_missing_until_sent_again(one_case: Ledger) -> None:
    ledger = one_case
    upload_id = ledger.upload_creating(_file_id(ledger), part_size=5 * MiB)
    ledger.upload_initialized(upload_id, pk="u-1", s3_upload_id="s3-1")
    ledger.part_sent(upload_id, 1, size=5 * MiB, etag='"a"', md5="a" * 32)
    assert ledger.part_invalidated(upload_id, 1, "list-parts shows another ETag") is True
    assert ledger.upload(upload_id).missing_part_numbers == [1, 2, 3]
    assert ledger.part_sent(upload_id, 1, size=5 * MiB, etag='"c"', md5="c" * 32) is True
    assert ledger.upload(upload_id).parts[1].etag == '"c"'
    assert ledger.events()[-1]["kind"] == "part.sent"


@pytest.mark.parametrize(
    ("number", "size", "message"),
    [(4, 5 * MiB, "parts 1 to 3, not 4"), (3, 5 * MiB, "should be 2097152 bytes"), (1, 1, "should be 5242880")],
)
def test_part_outside_the_upload_is_refused(one_case: Ledger, number: int, size: int, message: str) -> None:
    ledger = one_case
    upload_id = ledger.upload_creating(_file_id(ledger), part_size=5 * MiB)
    ledger.upload_initialized(upload_id, pk="u-1", s3_upload_id="s3-1")
    events = len(ledger.events())
    with pytest.raises(ValueError, match=message):
        ledger.part_sent(upload_id, number, size=size, etag='"a"')
    # The part's row, written before the checks (it travels with the upload's read), is rolled back with them.
    assert ledger.upload(upload_id).parts == {}
    assert ledger.count("SELECT count(*) FROM parts WHERE upload_id = ?", (upload_id,)) == 0
    assert len(ledger.events()) == events


def test_part_of_an_upload_that_is_not_open_is_refused(one_case: Ledger) -> None:
    ledger = one_case
    upload_id = ledger.upload_creating(_file_id(ledger), part_size=5 * MiB)
    with pytest.raises(UploadNotOpen, match="the upload is 'creating'"):
        ledger.part_sent(upload_id, 1, size=5 * MiB, etag='"a"')


def test_attaching_an_item_consumes_its_uploads(one_case: Ledger) -> None:
    ledger = one_case
    item_id = ledger.case_work(1).items[0].id
    upload_id = ledger.upload_creating(_file_id(ledger), part_size=5 * MiB)
    with pytest.raises(LedgerError, match="has no completed upload"):
        ledger.item_attached(item_id)
    ledger.upload_initialized(upload_id, pk="u-1", s3_upload_id="s3-1")
    _upload_all_parts(ledger, upload_id, [5 * MiB, 5 * MiB, 2 * MiB])
    ledger.upload_completed(upload_id)
    ledger.item_uploading(item_id)
    ledger.item_uploaded(item_id)
    assert ledger.item_attached(item_id) is True
    assert ledger.item_attached(item_id) is False
    assert ledger.upload(upload_id).state == "consumed"
    assert ledger.live_upload_count() == 0
    assert ledger.attached_image_items_count() == 1
    assert ledger.item_done(item_id) is True


def test_value_items_are_attached_without_uploads(ledger: Ledger) -> None:
    record(ledger, [planned_case("p1", {}, values={"patient-age": "63"})])
    item = ledger.case_work(1).items[0]
    assert item.value == 63 and item.files == ()
    assert ledger.item_attached(item.id) is True


def test_display_set_lifecycle_with_a_failed_import_and_retry(one_case: Ledger) -> None:
    ledger = one_case
    item_id = ledger.case_work(1).items[0].id
    ledger.case_started(1)
    ledger.display_set_creating(1)
    ledger.display_set_created(1, "ds-1")
    ledger.display_set_values_attached(1)
    ledger.display_set_importing(1)
    ledger.display_set_failed(1, "Image validation failed")
    ledger.item_failed(item_id, "Image validation failed")
    ledger.record_attempt("item", item_id, "Image validation failed")
    ledger.case_failed(1, "Image validation failed")
    attention = ledger.cases_needing_attention()
    assert [(row.title, row.state, row.last_error) for row in attention] == [
        ("p1", "failed", "Image validation failed")
    ]
    assert ledger.requeue_failed_cases() == [1]
    work = ledger.case_work(1)
    assert (work.state, work.display_set.state, work.display_set.pk) == ("planned", "created", "ds-1")
    assert (work.items[0].state, work.items[0].attempts) == ("planned", 0)
    assert ledger.requeue_failed_cases() == []


def test_display_set_post_that_certainly_failed_goes_back_to_pending(one_case: Ledger) -> None:
    ledger = one_case
    ledger.display_set_creating(1)
    assert ledger.display_set_not_created(1, "400: title not unique") is True
    ds = ledger.case_work(1).display_set
    assert (ds.state, ds.last_error) == ("pending", "400: title not unique")


def test_attempts_are_counted_with_the_last_error(one_case: Ledger) -> None:
    assert one_case.record_attempt("case", 1, "502") == 1
    assert one_case.record_attempt("case", 1, "503") == 2
    work = one_case.case_work(1)
    assert (work.attempts, work.last_error) == (2, "503")
    with pytest.raises(ValueError, match="attempts are counted"):
        one_case.record_attempt("part", (1, 1), "x")


def test_cases_to_run_streams_planned_and_running_cases_in_order(ledger: Ledger) -> None:
    record(ledger, [planned_case(f"p{n:03d}") for n in range(1, 8)])
    ledger.case_started(2)
    ledger.case_failed(2, "boom")
    ledger.case_started(3)
    titles = [case.title for case in ledger.cases_to_run(page=2)]
    assert titles == ["p001", "p003", "p004", "p005", "p006", "p007"]
    assert ledger.case_id_by_title("p005") == 5
    assert ledger.counts_by_state()["case"] == {"failed": 1, "planned": 5, "running": 1}


def test_in_flight_uploads_list_what_exists_on_the_server(one_case: Ledger) -> None:
    ledger = one_case
    upload_id = ledger.upload_creating(_file_id(ledger), part_size=5 * MiB)
    ledger.upload_initialized(upload_id, pk="u-1", s3_upload_id="s3-1")
    ledger.part_sent(upload_id, 1, size=5 * MiB, etag='"a"')
    [upload] = ledger.in_flight_uploads()
    assert (upload.id, list(upload.parts)) == (upload_id, [1])
    assert [u.id for u in ledger.uploads_of_file(_file_id(ledger))] == [upload_id]
    ledger.upload_aborted(upload_id, "fatal")
    assert ledger.in_flight_uploads() == []


def test_every_change_is_an_event_with_its_case(one_case: Ledger) -> None:
    ledger = one_case
    ledger.case_started(1)
    upload_id = ledger.upload_creating(_file_id(ledger), part_size=5 * MiB)
    ledger.upload_initialized(upload_id, pk="u-1", s3_upload_id="s3-1")
    ledger.part_sent(upload_id, 1, size=5 * MiB, etag='"a"')
    kinds = [(e["kind"], e["case_id"], e["subject_id"]) for e in ledger.events(case_id=1)]
    assert kinds == [
        ("case.running", 1, "1"),
        ("upload.creating", 1, str(upload_id)),
        ("upload.initialized", 1, str(upload_id)),
        ("part.sent", 1, f"{upload_id}:1"),
    ]
