"""The job file (TOML) → a frozen ``JobConfig``; the API token from the environment or a token file, never the job file.

A job file names the reader study, the server, the case tree and how files map to sockets::

    reader_study = "example-study"      # or archive = "example-archive": each case becomes an archive item
    base_url = "https://grand-challenge.org/api/v1/"
    case_root = "cases"                  # relative to the job file
    # ca_file = "ca.pem"                 # only for a server with a private CA (e.g. the bundled emulator)

    [cases]
    depth = 1                            # each folder at this depth under case_root is one case
    title = "{folder}"                   # {folder}, {path} (relative, '/'-separated) or {parent}; a pseudonym:
                                         # "case-{folder|sha256:12}"; or titles_csv = "titles.csv" (folder,title)
    redact_titles = false                # true: logs, events, reports, status show title#<hash>, not the title
    ignore = [".DS_Store", "*.txt"]      # globs of files to leave out (reported as info)

    [[rules]]                            # exactly one of glob / regex / position per rule
    glob = "ct.mha"                      # by name: what `gcbulk plan` shows as "ct-image ← ct.mha in N cases"
    socket = "ct-image"
    required = true                      # a case without it is blocked (reported), the others still run

    [[rules]]
    position = 1                         # the first file of the case (by name) that no pattern rule took; the
    socket = "airway-segmentation"       # tutorial's form, but names decide the order: prefer a glob

    [[rules]]
    glob = "*.dcm"                       # matched against the path inside the case folder (name only if no '/')
    socket = "generic-medical-image"
    group = "dicom-series"               # one file set per SeriesInstanceUID (headers only); or "all"

    [[rules]]
    dicom = { Modality = "CT", SeriesDescription = "*lung*" }   # DICOM found by content, one series at a time,
    socket = "ct-dicom"                  # by its header fields (globs, case-insensitive); may add glob/regex on
    image_name = "{title} {Modality}"    # the path; image_name: a DICOM Image Set's name (default "{socket}"),
                                         # from fields de-identification keeps (engine/plan/phi.py)

    [[rules]]
    glob = "age.json"
    socket = "patient-age"
    value = true                         # the file's JSON content is the value of a value socket

    [values]                             # the same JSON value for a value socket in every case
    "clinical-notes" = { source = "scanner A" }

    [engine]                             # concurrency knobs read by the transfer engine
    files_in_flight = 8

    [dicom]                              # DICOM Image Set values (gcbulk.engine.dicom.options)
    deidentify = true                    # false sends the files as they are: only for already de-identified data
    staging_budget = "4 GiB"             # de-identified copies on disk at once (staging = "<job>.dicom-staging")
    allow_phi_titles = false             # true: titles/image names holding patient identifiers are sent (warning)
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from gcbulk.engine.dicom.options import (
    DicomOptionError,
    DicomOptions,
    check_criteria,
    check_image_name,
    parse_dicom_table,
)
from gcbulk.engine.gc.errors import ConfigurationError
from gcbulk.engine.gc.target_ref import ARCHIVE, READER_STUDY, TargetRef
from gcbulk.engine.plan.titles import TitleTemplateError, check_template
from gcbulk.engine.upload.transfer_settings import JOB_KNOBS, TransferSettings
from gcbulk.state.records import JobBinding

TOKEN_ENV = "GRAND_CHALLENGE_AUTHORIZATION"  # the variable gcapi reads (docs/gc-api.md §0)
_SECRET_KEY = re.compile(r"token|authori[sz]ation|password|secret", re.IGNORECASE)
_GROUPS = frozenset({"dicom-series", "all"})
_UNITS = {"": 1, "b": 1, "kib": 1024, "mib": 1024**2, "gib": 1024**3, "kb": 1000, "mb": 1000**2, "gb": 1000**3}
MiB = 1024**2


class JobFileError(ConfigurationError):
    """The job file is missing, unreadable or wrong; the message names the key and what to do."""


@dataclass(frozen=True, kw_only=True)
class Rule:
    """Files → one socket. Exactly one of ``glob``, ``regex`` or ``position`` is set."""

    index: int  # 1-based position in the job file, for messages
    socket: str
    glob: str | None = None
    regex: re.Pattern[str] | None = None
    position: int | None = None
    group: str | None = None  # "dicom-series" | "all" | None (each file, with its .mhd companion, is a file set)
    value: bool = False  # the file holds the JSON value of a value socket
    required: bool = False  # a case without a file for this socket is blocked (a finding), not planned half-empty
    dicom: Mapping[str, str] | None = None  # header field → glob: whole DICOM series, found by content
    image_name: str | None = None  # a DICOM Image Set value's name template

    @property
    def label(self) -> str:
        what = (
            f"glob {self.glob!r}"
            if self.glob is not None
            else f"regex {self.regex.pattern!r}"
            if self.regex is not None
            else f"position {self.position}"
            if self.position is not None
            else "dicom " + ", ".join(f"{k}={v!r}" for k, v in (self.dicom or {}).items())
        )
        return f"rules[{self.index}] ({what} -> {self.socket})"

    def as_dict(self) -> dict[str, Any]:
        return {
            "socket": self.socket,
            "glob": self.glob,
            "regex": None if self.regex is None else self.regex.pattern,
            "position": self.position,
            "group": self.group,
            "value": self.value,
            "required": self.required,
            **({"dicom": dict(self.dicom)} if self.dicom is not None else {}),
            **({"image_name": self.image_name} if self.image_name is not None else {}),
        }


@dataclass(frozen=True, kw_only=True)
class CaseLayout:
    depth: int = 1
    title: str = "{folder}"
    ignore: tuple[str, ...] = ()
    titles_csv: Path | None = None  # folder (relative to case_root) → title, instead of the template
    titles: Mapping[str, str] | None = None  # the CSV's rows
    redact_titles: bool = False  # logs, events, reports and status show a hash of each title instead


@dataclass(frozen=True, kw_only=True)
class JobConfig:
    job_file: Path
    # Exactly one of the two names where the cases go (``target``): a reader study's slug or an archive's.
    reader_study: str = ""
    archive: str = ""
    base_url: str
    case_root: Path
    ca_file: Path | None = None
    cases: CaseLayout = field(default_factory=CaseLayout)
    rules: tuple[Rule, ...] = ()
    values: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    engine: TransferSettings = field(default_factory=TransferSettings)
    dicom: DicomOptions = field(default_factory=DicomOptions)

    @property
    def target(self) -> TargetRef:
        """Where the cases go: each case becomes a display set of the reader study, or an item of the archive."""
        if self.archive:
            return TargetRef(ARCHIVE, self.archive)
        return TargetRef(READER_STUDY, self.reader_study)

    @property
    def binding(self) -> JobBinding:
        # The ledger's ``reader_study`` column holds the target (``TargetRef.ledger_key``: no migration needed).
        return JobBinding(reader_study=self.target.ledger_key, base_url=self.base_url, case_root=str(self.case_root))

    @property
    def socket_slugs(self) -> tuple[str, ...]:
        """Every socket the job refers to, in first-mention order."""
        return tuple(dict.fromkeys([rule.socket for rule in self.rules] + list(self.values)))

    def rules_dict(self) -> dict[str, Any]:
        """The mapping part of the job, as recorded in the ledger."""
        return {
            "cases": {
                "depth": self.cases.depth,
                "title": self.cases.title,
                "ignore": list(self.cases.ignore),
                "titles_csv": None if self.cases.titles_csv is None else str(self.cases.titles_csv),
            },
            "rules": [rule.as_dict() for rule in self.rules],
            "values": dict(self.values),
        }


def _positive(name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise JobFileError(f"{name} must be a whole number of at least 1, got {value!r}")


def parse_size(name: str, value: object) -> int:
    """Bytes from an int or a string such as ``"32 MiB"``."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        match = re.fullmatch(r"\s*(\d+)\s*([A-Za-z]*)\s*", value)
        if match and match.group(2).lower() in _UNITS:
            return int(match.group(1)) * _UNITS[match.group(2).lower()]
    raise JobFileError(f'{name} must be a size in bytes or like "32 MiB", got {value!r}')


def _find_secret_keys(table: Mapping[str, Any], prefix: str = "") -> list[str]:
    found = []
    for key, value in table.items():
        dotted = f"{prefix}{key}"
        if _SECRET_KEY.search(key):
            found.append(dotted)
        if isinstance(value, Mapping):
            found.extend(_find_secret_keys(value, f"{dotted}."))
        elif isinstance(value, list):
            for index, entry in enumerate(value, 1):
                if isinstance(entry, Mapping):
                    found.extend(_find_secret_keys(entry, f"{dotted}[{index}]."))
    return found


def _reject_unknown(where: str, table: Mapping[str, Any], known: set[str], job_file: Path) -> None:
    unknown = sorted(set(table) - known)
    if unknown:
        raise JobFileError(
            f"{job_file}: unknown key {where}{unknown[0]!r}; the keys allowed there are {', '.join(sorted(known))}"
        )


def _table(data: Mapping[str, Any], key: str, job_file: Path) -> Mapping[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, Mapping):
        raise JobFileError(f"{job_file}: [{key}] must be a table")
    return value


def _normalise_base_url(value: object, job_file: Path) -> str:
    if not isinstance(value, str) or not value.strip():
        raise JobFileError(f'{job_file}: base_url is required, e.g. base_url = "https://grand-challenge.org/api/v1/"')
    url = value.strip()
    parts = urlsplit(url)
    loopback = parts.hostname in ("localhost", "127.0.0.1", "::1")
    if parts.scheme != "https" and not (parts.scheme == "http" and loopback):
        raise JobFileError(f"{job_file}: base_url {url!r} must start with https:// (docs/gc-api.md §5)")
    return url if url.endswith("/") else url + "/"


def _parse_rule(index: int, raw: object, job_file: Path) -> Rule:
    where = f"{job_file}: rules[{index}]"
    if not isinstance(raw, Mapping):
        raise JobFileError(f"{where} must be a table ([[rules]])")
    _reject_unknown(
        f"rules[{index}].",
        raw,
        {"socket", "glob", "regex", "position", "group", "value", "required", "dicom", "image_name"},
        job_file,
    )
    socket = raw.get("socket")
    if not isinstance(socket, str) or not socket:
        raise JobFileError(f'{where} needs socket = "<socket slug>"')
    selectors = [key for key in ("glob", "regex", "position") if key in raw]
    dicom = image_name = None
    try:
        if "dicom" in raw:
            # Series by header fields, optionally narrowed by a glob or regex on the path (never a position).
            dicom = check_criteria(raw["dicom"], where)
            if "position" in raw or len(selectors) > 1 or "group" in raw or raw.get("value"):
                raise JobFileError(
                    f"{where}: a dicom rule takes whole series; it may add one glob or regex on the "
                    "path, but no position, group or value"
                )
        if "image_name" in raw:
            image_name = check_image_name(raw["image_name"], where)
    except DicomOptionError as exc:
        raise JobFileError(str(exc)) from None
    if dicom is None and len(selectors) != 1:
        given = " and ".join(selectors) or "none"
        raise JobFileError(f"{where} needs exactly one of glob, regex or position, or a dicom table (it has {given})")
    glob = raw.get("glob")
    if glob is not None and (not isinstance(glob, str) or not glob):
        raise JobFileError(f"{where}: glob must be a non-empty string")
    regex = None
    if "regex" in raw:
        try:
            regex = re.compile(raw["regex"])
        except (re.error, TypeError) as exc:
            raise JobFileError(f"{where}: regex {raw['regex']!r} is not a valid regular expression ({exc})") from None
    position = raw.get("position")
    if position is not None:
        _positive(f"rules[{index}].position", position)
    group = raw.get("group")
    if group is not None and group not in _GROUPS:
        raise JobFileError(f"{where}: group must be one of {', '.join(sorted(_GROUPS))}, got {group!r}")
    value = raw.get("value", False)
    if not isinstance(value, bool):
        raise JobFileError(f"{where}: value must be true or false")
    if value and group is not None:
        raise JobFileError(f"{where}: a value rule reads one JSON file; it cannot also group files")
    required = raw.get("required", False)
    if not isinstance(required, bool):
        raise JobFileError(f"{where}: required must be true or false")
    return Rule(
        index=index,
        socket=socket,
        glob=glob,
        regex=regex,
        position=position,
        group=group,
        value=value,
        required=required,
        dicom=dicom,
        image_name=image_name,
    )


def _read_titles(path: Path, job_file: Path) -> dict[str, str]:
    """cases.titles_csv: a CSV with a header row ``folder,title``; each folder once, each title once."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            if reader.fieldnames is None or not {"folder", "title"} <= set(reader.fieldnames):
                raise JobFileError(
                    f"{job_file}: cases.titles_csv {path} needs a header row with the columns folder and title"
                )
            titles: dict[str, str] = {}
            seen: dict[str, str] = {}
            for line, row in enumerate(reader, 2):
                folder, title = (row.get("folder") or "").strip().strip("/"), (row.get("title") or "").strip()
                if not folder or not title:
                    raise JobFileError(
                        f"{job_file}: cases.titles_csv {path} line {line}: folder and title must both be filled in"
                    )
                if folder in titles:
                    raise JobFileError(
                        f"{job_file}: cases.titles_csv {path} line {line}: folder {folder!r} is "
                        "listed twice; give each case folder one title"
                    )
                if title in seen:
                    raise JobFileError(
                        f"{job_file}: cases.titles_csv {path} line {line}: title {title!r} is also "
                        f"the title of {seen[title]!r}; titles must be unique in the reader study"
                    )
                titles[folder] = title
                seen[title] = folder
    except FileNotFoundError:
        raise JobFileError(f"{job_file}: cases.titles_csv {path} does not exist") from None
    except UnicodeDecodeError:
        raise JobFileError(f"{job_file}: cases.titles_csv {path} is not UTF-8 text; save it as UTF-8 CSV") from None
    except OSError as exc:
        raise JobFileError(f"{job_file}: cases.titles_csv {path} cannot be read: {exc.strerror}") from None
    except csv.Error as exc:
        raise JobFileError(f"{job_file}: cases.titles_csv {path} is not valid CSV: {exc}") from None
    return titles


def _parse_cases(raw: Mapping[str, Any], job_file: Path) -> CaseLayout:
    _reject_unknown("cases.", raw, {"depth", "title", "ignore", "titles_csv", "redact_titles"}, job_file)
    depth = raw.get("depth", 1)
    _positive("cases.depth", depth)
    title = raw.get("title", "{folder}")
    if not isinstance(title, str):
        raise JobFileError(f'{job_file}: cases.title must be a string such as "{{folder}}"')
    try:
        check_template(title)
    except TitleTemplateError as exc:
        raise JobFileError(f"{job_file}: cases.title {title!r}: {exc}") from None
    ignore = raw.get("ignore", [])
    if not isinstance(ignore, list) or not all(isinstance(p, str) for p in ignore):
        raise JobFileError(f"{job_file}: cases.ignore must be a list of glob strings")
    titles_csv = titles = None
    if raw.get("titles_csv") is not None:
        if not isinstance(raw["titles_csv"], str) or not raw["titles_csv"]:
            raise JobFileError(f"{job_file}: cases.titles_csv must be the path of a CSV file (folder,title)")
        titles_csv = (job_file.parent / raw["titles_csv"]).resolve()
        titles = MappingProxyType(_read_titles(titles_csv, job_file))
    redact = raw.get("redact_titles", False)
    if not isinstance(redact, bool):
        raise JobFileError(f"{job_file}: cases.redact_titles must be true or false")
    return CaseLayout(
        depth=depth, title=title, ignore=tuple(ignore), titles_csv=titles_csv, titles=titles, redact_titles=redact
    )


def _parse_engine(raw: Mapping[str, Any], job_file: Path) -> TransferSettings:
    _reject_unknown("engine.", raw, set(JOB_KNOBS), job_file)
    values = dict(raw)
    if "part_size" in values:
        values["part_size"] = parse_size("engine.part_size", values["part_size"])
    try:
        return TransferSettings.from_knobs(values)
    except ConfigurationError as exc:
        raise JobFileError(f"{job_file}: {exc}") from None


def load_job(path: Path | str) -> JobConfig:
    """Read and validate a job file. Raises :class:`JobFileError` naming the key and what to do."""
    job_file = Path(path).absolute()
    try:
        with open(job_file, "rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise JobFileError(f"job file {job_file} does not exist") from None
    except OSError as exc:
        raise JobFileError(f"job file {job_file} cannot be read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise JobFileError(f"job file {job_file} is not valid TOML: {exc}") from None
    secrets = _find_secret_keys(data)
    if secrets:
        raise JobFileError(
            f"{job_file}: key {secrets[0]!r} looks like a credential. Never put the API token in the job file (it gets "
            f"shared and committed): remove it, then set {TOKEN_ENV} in the environment or pass --token-file PATH"
        )
    _reject_unknown(
        "",
        data,
        {"reader_study", "archive", "base_url", "case_root", "ca_file", "cases", "rules", "values", "engine", "dicom"},
        job_file,
    )
    reader_study, archive = _target_slugs(data, job_file)
    base_url = _normalise_base_url(data.get("base_url"), job_file)
    case_root_value = data.get("case_root")
    if not isinstance(case_root_value, str) or not case_root_value:
        raise JobFileError(f"{job_file}: case_root is required: the folder holding one folder per case")
    case_root = (job_file.parent / case_root_value).resolve()
    ca_file = None
    if data.get("ca_file") is not None:
        ca_file = (job_file.parent / str(data["ca_file"])).resolve()
        if not ca_file.is_file():
            raise JobFileError(f"{job_file}: ca_file {ca_file} does not exist")
    raw_rules = data.get("rules", [])
    if not isinstance(raw_rules, list):
        raise JobFileError(f"{job_file}: rules must be written as [[rules]] tables")
    rules = tuple(_parse_rule(index, raw, job_file) for index, raw in enumerate(raw_rules, 1))
    values = _table(data, "values", job_file)
    for slug, value in values.items():
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError):
            raise JobFileError(
                f"{job_file}: values.{slug} is not a JSON value (TOML dates and times are not JSON); quote it as a "
                "string or use a number, boolean, array or table"
            ) from None
    if not rules and not values:
        raise JobFileError(f"{job_file}: add at least one [[rules]] table mapping files to a socket")
    positions = [rule.position for rule in rules if rule.position is not None]
    if len(positions) != len(set(positions)):
        raise JobFileError(f"{job_file}: two rules claim the same position; give each position one socket")
    names: dict[str, str] = {}
    for rule in rules:
        if rule.image_name is not None and names.setdefault(rule.socket, rule.image_name) != rule.image_name:
            raise JobFileError(
                f"{job_file}: {rule.label} gives socket {rule.socket!r} another image_name than an "
                "earlier rule; give each socket one image_name"
            )
    try:
        dicom = parse_dicom_table(data.get("dicom", {}), job_file, names, parse_size)
    except DicomOptionError as exc:
        raise JobFileError(str(exc)) from None
    return JobConfig(
        job_file=job_file,
        reader_study=reader_study,
        archive=archive,
        base_url=base_url,
        case_root=case_root,
        ca_file=ca_file,
        cases=_parse_cases(_table(data, "cases", job_file), job_file),
        rules=rules,
        values=MappingProxyType(dict(values)),
        engine=_parse_engine(_table(data, "engine", job_file), job_file),
        dicom=dicom,
    )


def _target_slugs(data: Mapping[str, Any], job_file: Path) -> tuple[str, str]:
    """``(reader_study, archive)``: exactly one of them is given, as a non-empty string."""
    given = {key: data[key] for key in ("reader_study", "archive") if key in data}
    if len(given) != 1:
        what = "name exactly one target (it names both)" if given else "reader_study is required (or archive)"
        raise JobFileError(
            f'{job_file}: {what}: reader_study = "SLUG" for a reader study\'s display sets, '
            'or archive = "SLUG" for an archive\'s items (the slug is the last part of its URL)'
        )
    key, value = next(iter(given.items()))
    if not isinstance(value, str) or not value.strip() or ":" in value:
        raise JobFileError(f"{job_file}: {key} must be the slug, the last part of the {key.replace('_', ' ')}'s URL")
    return (value.strip(), "") if key == "reader_study" else ("", value.strip())


def load_token(token_file: Path | str | None = None, environ: Mapping[str, str] = os.environ) -> str:
    """The API token: from ``token_file`` if given, else ``$GRAND_CHALLENGE_AUTHORIZATION`` (as gcapi)."""
    if token_file is not None:
        try:
            token = Path(token_file).read_text().strip()
            mode = os.stat(token_file).st_mode
        except OSError as exc:
            raise ConfigurationError(f"token file {token_file} cannot be read: {exc.strerror}") from None
        if mode & stat.S_IROTH:
            # Still used: refusing would stop a run over a file mode, but whoever shares the machine can read it.
            logging.getLogger("gcbulk").warning(
                "token file %s is readable by every user of this machine (mode %s): run chmod 600 %s",
                token_file,
                oct(stat.S_IMODE(mode)),
                token_file,
            )
        if not token:
            raise ConfigurationError(f"token file {token_file} is empty; put your Grand Challenge API token in it")
        return token
    token = environ.get(TOKEN_ENV, "").strip()
    if not token:
        raise ConfigurationError(
            f"no API token: set {TOKEN_ENV} or pass --token-file PATH (your Grand Challenge API token; create one "
            "under your profile's API tokens); 'gcbulk plan --offline' needs none"
        )
    return token
