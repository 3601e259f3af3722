"""A PostgreSQL ledger's password is never shown, whatever characters it holds and wherever the DSN carries it: in the
user part of the URL (``postgresql://user:pw@host``), as a query parameter (``?password=pw&…``) or as libpq's
``password=`` keyword. What ``shown_dsn`` hides and what ``dsn_passwords`` registers for redaction are the same text,
read by one pattern."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gcbulk.engine.cli import main
from gcbulk.engine.ledger_location import ledger_location, shown_ledger
from gcbulk.redaction import redact_text
from gcbulk.state.dsn import dsn_passwords, shown_dsn
from tests.container.conftest import write_job_file

# Each holds characters a DSN gives a meaning to, between pieces distinct enough to be looked for in any output.
UNUSUAL = [*(f"Qz7v{mark}Wk4p" for mark in "#&@:/? "), "Qz7v%40Wk4p", "Qz7v#Wk4p&Lm2x@Hb5n:Rc8t%2F"]
PIECE = re.compile(r"[A-Za-z0-9]{4,}")


def url_form(password: str) -> str:
    return f"postgresql://gcbulk:{password}@db.internal:5432/ledger?sslmode=require"


def query_form(password: str) -> str:
    return f"postgresql://gcbulk@db.internal:5432/ledger?sslmode=require&password={password}&application_name=w1"


def keyword_form(password: str) -> str:
    quoted = password.replace("\\", "\\\\").replace("'", "\\'")
    return f"host=db.internal port=5432 dbname=ledger user=gcbulk password='{quoted}' sslmode=require"


def hidden_by_hand(dsn: str, written: str) -> str:
    return dsn.replace(written, "***", 1)


@pytest.mark.parametrize("password", UNUSUAL)
def test_a_password_in_the_user_part_is_hidden_whole_and_found_whole(password: str) -> None:
    dsn = url_form(password)
    shown = shown_dsn(dsn)
    assert shown == "postgresql://gcbulk:***@db.internal:5432/ledger?sslmode=require"
    assert password in dsn_passwords(dsn)
    assert shown == hidden_by_hand(dsn, password)  # masking hid exactly what extraction found


@pytest.mark.parametrize("password", UNUSUAL)
def test_a_percent_encoded_password_is_hidden_and_found_as_written_and_as_libpq_sends_it(password: str) -> None:
    for dsn in (url_form(quote(password, safe="")), query_form(quote(password, safe=""))):
        shown = shown_dsn(dsn)
        assert password not in shown and quote(password, safe="") not in shown
        assert {password, quote(password, safe="")} <= dsn_passwords(dsn)


@pytest.mark.parametrize("password", [p for p in UNUSUAL if "&" not in p])
def test_a_password_given_as_a_query_parameter_keeps_the_other_parameters_shown(password: str) -> None:
    dsn = query_form(password)
    assert shown_dsn(dsn) == (
        "postgresql://gcbulk@db.internal:5432/ledger?sslmode=require&password=***&application_name=w1"
    )
    assert password in dsn_passwords(dsn)
    assert shown_dsn(dsn) == hidden_by_hand(dsn, password)


def test_an_unencoded_ampersand_in_a_query_password_does_not_end_it_before_a_real_parameter() -> None:
    # "&sand-99" has no "=": it is no parameter, so still the password ("#" is no URL fragment to libpq).
    dsn = query_form("Amper&sand-99#Frag")
    assert shown_dsn(dsn).endswith("&password=***&application_name=w1")
    assert "Amper&sand-99#Frag" in dsn_passwords(dsn)


@pytest.mark.parametrize("password", [*UNUSUAL, "with space's end\\"])
def test_a_quoted_keyword_password_as_a_driver_message_quotes_it_is_hidden(password: str) -> None:
    dsn = keyword_form(password)
    assert shown_dsn(dsn) == "host=db.internal port=5432 dbname=ledger user=gcbulk password=*** sslmode=require"
    assert password in dsn_passwords(dsn)  # unquoted, as libpq sends it


def test_a_dsn_without_a_password_is_shown_as_it_is_and_carries_none() -> None:
    for dsn in (
        "postgresql://gcbulk@db.internal:5432/ledger?sslmode=require",
        "postgres://db.internal/ledger",
        "postgresql://h1:5432,h2:5433/ledger?target_session_attrs=read-write",
    ):
        assert shown_dsn(dsn) == dsn
        assert dsn_passwords(dsn) == set()


@given(st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=30))
def test_any_password_however_written_is_hidden_exactly_and_found(password: str) -> None:
    encoded = quote(password, safe="")
    for dsn, shown in [
        (url_form(encoded), url_form("***")),
        (url_form(password), url_form("***")),  # unencoded, as people paste passwords
        (query_form(encoded), query_form("***")),
        (keyword_form(password), keyword_form("***").replace("'***'", "***")),
    ]:
        assert shown_dsn(dsn) == shown  # all of the password hidden, nothing else
        assert password in dsn_passwords(dsn)


@pytest.mark.parametrize("password", UNUSUAL)
def test_a_ledger_flag_registers_every_form_so_a_traceback_quoting_it_is_scrubbed(password: str) -> None:
    dsn = url_form(quote(password, safe=""))
    ledger_location(dsn)
    assert shown_ledger(dsn) == "postgresql://gcbulk:***@db.internal:5432/ledger?sslmode=require"
    scrubbed = redact_text(f"psycopg.OperationalError: auth failed for {dsn!r} with password {password!r}")
    assert password not in scrubbed and quote(password, safe="") not in scrubbed


@pytest.mark.parametrize("dsn_of", [url_form, query_form], ids=["user-part", "query"])
@pytest.mark.parametrize("password", UNUSUAL)
def test_an_unreachable_ledger_with_an_unusual_password_fails_without_showing_any_piece_of_it(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    password: str,
    dsn_of: Callable[[str], str],
) -> None:
    # Port 9 (discard): nothing listens. An unencoded "@" or "&" makes libpq read the rest of the password as a host
    # or a parameter, and its error message quotes that piece.
    dsn = dsn_of(password).replace("db.internal:5432", "127.0.0.1:9")
    job = write_job_file(tmp_path / "etc")
    assert main(["status", str(job), "--offline", "--json", "--ledger", dsn]) == 2
    out, err = capsys.readouterr()
    assert "PostgreSQL ledger postgresql://gcbulk" in err and "127.0.0.1:9/ledger" in err
    for piece in PIECE.findall(password):
        assert piece not in out + err
