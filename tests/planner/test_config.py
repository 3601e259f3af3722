"""The job file: what it accepts, and a clear error naming the key for everything it does not."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from gcbulk.engine.gc.errors import ConfigurationError
from gcbulk.engine.jobfile import (
    TOKEN_ENV,
    JobFileError,
    load_job,
    load_token,
    parse_size,
)
from gcbulk.engine.upload.transfer_settings import TransferSettings
from tests.planner.conftest import write_job

MiB = 1024**2


def test_example_job_file_loads() -> None:
    config = load_job(Path(__file__).resolve().parents[2] / "examples" / "tutorial-job.toml")
    assert config.reader_study == "example-study"
    assert [(rule.glob, rule.socket, rule.required) for rule in config.rules] == [
        ("ct.mha", "ct-image", True),
        ("*seg*.mha", "airway-segmentation", False),
    ]
    assert config.engine.part_size == 32 * MiB
    assert config.case_root == config.job_file.parent / "cases"


def test_defaults_and_relative_paths(job_dir: Path) -> None:
    config = load_job(write_job(job_dir, base_url="https://gc.example/api/v1"))
    assert config.base_url == "https://gc.example/api/v1/"
    assert config.case_root == job_dir / "cases"
    assert (config.cases.depth, config.cases.title) == (1, "{folder}")
    assert config.engine == TransferSettings()
    assert config.binding.case_root == str(job_dir / "cases")


def test_config_is_frozen(job_dir: Path) -> None:
    config = load_job(write_job(job_dir))
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.reader_study = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        TransferSettings(8)  # type: ignore[misc]  # keyword-only


@pytest.mark.parametrize(
    ("where", "snippet"),
    [("top", 'token = "abc"'), ("engine", 'api_token = "abc"'), ("rules", 'authorization = "Bearer abc"')],
)
def test_token_in_the_job_file_is_refused_with_where_to_put_it(job_dir: Path, where: str, snippet: str) -> None:
    job = write_job(
        job_dir,
        head=snippet if where == "top" else "",
        engine=snippet if where == "engine" else "",
        rules=f'[[rules]]\nposition = 1\nsocket = "ct-image"\n{snippet if where == "rules" else ""}\n',
    )
    with pytest.raises(JobFileError, match=f"looks like a credential.*{TOKEN_ENV}.*--token-file") as raised:
        load_job(job)
    assert "abc" not in str(raised.value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"head": "reader_studdy = 'x'"}, "unknown key 'reader_studdy'"),
        ({"engine": "files_in_flite = 3"}, "unknown key engine.'files_in_flite'"),
        ({"cases": "depht = 2"}, "unknown key cases.'depht'"),
        ({"base_url": "http://gc.example/api/v1/"}, "must start with https://"),
        ({"rules": '[[rules]]\nsocket = "ct-image"\n'}, r"rules\[1\] needs exactly one of glob, regex or position"),
        ({"rules": '[[rules]]\nglob = "*"\nposition = 1\nsocket = "x"\n'}, "it has glob and position"),
        ({"rules": '[[rules]]\nglob = "*"\n'}, r"rules\[1\] needs socket"),
        ({"rules": '[[rules]]\nregex = "("\nsocket = "x"\n'}, "not a valid regular expression"),
        ({"rules": '[[rules]]\nglob = "*"\nsocket = "x"\ngroup = "series"\n'}, "group must be one of all, dicom"),
        ({"rules": '[[rules]]\nglob = "*"\nsocket = "x"\nvalue = true\ngroup = "all"\n'}, "cannot also group"),
        ({"rules": '[[rules]]\nposition = 0\nsocket = "x"\n'}, "position must be a whole number of at least 1"),
        (
            {"rules": '[[rules]]\nposition = 1\nsocket = "x"\n[[rules]]\nposition = 1\nsocket = "y"\n'},
            "two rules claim the same position",
        ),
        ({"rules": ""}, r"add at least one \[\[rules\]\]"),
        (
            {"cases": 'title = "{case}"'},
            r"cases.title '\{case\}': \{case\} is not a field; the template may use "
            r"\{folder\}, \{path\}, \{parent\}",
        ),
        ({"cases": 'title = "{folder|md5}"'}, r"\|md5 is not a filter; use \|sha256 or \|sha256:N"),
        ({"cases": 'title = "{folder|sha256:2}"'}, "the length must be a whole number from 4 to 64"),
        ({"cases": 'title = "case {folder"'}, "opens a field that is not closed"),
        ({"cases": 'titles_csv = "missing.csv"'}, r"cases.titles_csv .*missing.csv does not exist"),
        ({"cases": "depth = 0"}, "cases.depth must be a whole number"),
        ({"cases": 'ignore = "*.txt"'}, "cases.ignore must be a list"),
        ({"values": "when = 2025-01-01"}, "values.when is not a JSON value"),
        ({"engine": "part_size = 1024"}, "part_size must be between 5 MiB and 5 GiB"),
        ({"engine": 'part_size = "lots"'}, "part_size must be a size"),
        ({"engine": "live_upload_ceiling = 2500"}, "between 1 and 2000"),
        ({"engine": "imports_in_flight = 17"}, "between 1 and 16"),
        ({"engine": "parts_in_flight = 0"}, "parts_in_flight must be a whole number of at least 1"),
        ({"head": 'ca_file = "missing.pem"'}, "ca_file .* does not exist"),
    ],
)
def test_bad_job_file_names_the_key_and_what_to_do(job_dir: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(JobFileError, match=message):
        load_job(write_job(job_dir, **kwargs))


def test_missing_required_keys(job_dir: Path) -> None:
    job = job_dir / "job.toml"
    job.write_text('base_url = "https://gc.example/api/v1/"\ncase_root = "cases"\n')
    with pytest.raises(JobFileError, match="reader_study is required"):
        load_job(job)
    job.write_text('reader_study = "s"\ncase_root = "cases"\n')
    with pytest.raises(JobFileError, match="base_url is required"):
        load_job(job)
    job.write_text('reader_study = "s"\nbase_url = "https://gc.example/api/v1/"\n')
    with pytest.raises(JobFileError, match="case_root is required"):
        load_job(job)


def test_unreadable_job_files(tmp_path: Path) -> None:
    with pytest.raises(JobFileError, match="does not exist"):
        load_job(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("reader_study = \n")
    with pytest.raises(JobFileError, match="not valid TOML"):
        load_job(bad)


def test_sizes_take_units() -> None:
    assert parse_size("x", "64 MiB") == 64 * MiB
    assert parse_size("x", "5MB") == 5_000_000
    assert parse_size("x", 123) == 123


def test_token_comes_from_the_environment_or_a_token_file(tmp_path: Path) -> None:
    assert load_token(environ={TOKEN_ENV: " tok \n"}) == "tok"
    token_file = tmp_path / "token"
    token_file.write_text("from-file\n")
    assert load_token(token_file, environ={TOKEN_ENV: "from-env"}) == "from-file"


def test_missing_token_says_where_to_put_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=f"no API token: set {TOKEN_ENV}.*--token-file.*--offline"):
        load_token(environ={})
    empty = tmp_path / "token"
    empty.write_text("\n")
    with pytest.raises(ConfigurationError, match="is empty"):
        load_token(empty, environ={})
    with pytest.raises(ConfigurationError, match="cannot be read"):
        load_token(tmp_path / "missing", environ={})
