"""The effective settings of a run: the job file, overridden by the environment, overridden by command-line flags.

Precedence, highest first: **flag > environment (``GCBULK_*``) > job file > default**. A container is configured by
environment variables (twelve-factor), a person at a terminal by flags; the job file says what to migrate and stays
shareable. Settings of the *process* (ledger path, metrics address, poll interval, log level) have no job-file key:
they describe where and how this run works, not the job, so they come from flags, the environment or defaults.

The API token is never a setting of the job file (``gcbulk.engine.jobfile`` refuses one) and never a flag value (it would
show in ``ps``): ``--token-file`` > ``$GCBULK_TOKEN_FILE`` (e.g. a compose secret at ``/run/secrets/gc_token``) >
``$GRAND_CHALLENGE_AUTHORIZATION`` (gcapi's variable, docs/gc-api.md §0). It is kept out of every repr and printed masked.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gcbulk.engine.gc.errors import ConfigurationError
from gcbulk.engine.jobfile import (
    TOKEN_ENV,
    JobConfig,
    JobFileError,
    _normalise_base_url,
    load_job,
    load_token,
    parse_size,
)
from gcbulk.engine.ledger_location import (
    EVENTS_HELP,
    WORKER_ID_HELP,
    LedgerLocation,
    add_ledger_argument,
    default_events,
    default_worker_id,
    ledger_location,
    parse_worker_id,
    shown_ledger,
)
from gcbulk.engine.upload.transfer_settings import (
    JOB_KNOBS,
    SWITCH_KNOBS,
    TransferSettings,
    parse_import_timeout,
    parse_switch,
)
from gcbulk.state.ledger import default_ledger_path

ENV_PREFIX = "GCBULK_"
TOKEN_FILE_ENV = "GCBULK_TOKEN_FILE"
# 9464 is the port OpenTelemetry's Prometheus exporter uses; loopback unless asked, so a laptop run exposes nothing.
DEFAULT_METRICS_ADDRESS = "127.0.0.1:9464"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMATS = ("auto", "json", "text")
MASK = "********"

FLAG, ENVIRONMENT, JOB_FILE, DEFAULT = "flag", "environment", "job file", "default"


@dataclass(frozen=True)
class Address:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_address(text: str, what: str = "metrics address") -> Address | None:
    """``host:port``, ``[v6]:port`` or ``:port`` (all interfaces); ``off`` (or empty) disables the endpoint."""
    text = text.strip()
    if text.lower() in ("", "off", "none", "false", "0"):
        return None
    host, sep, port_text = text.rpartition(":")
    host = host.strip("[]") if host.startswith("[") else host
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ConfigurationError(
            f"the {what} {text!r} is not host:port (e.g. 127.0.0.1:9464, 0.0.0.0:9464 in a container, or off)"
        )
    return Address(host or "0.0.0.0", int(port_text))


def _seconds(name: str) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (value > 0 and math.isfinite(value)):
            raise ConfigurationError(f"{name} must be a number of seconds above 0, got {text!r}")
        return value

    return parse


def _choice(name: str, choices: tuple[str, ...], *, upper: bool = False) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = text.strip().upper() if upper else text.strip().lower()
        if value not in choices:
            raise ConfigurationError(f"{name} must be one of {', '.join(choices)}, got {text!r}")
        return value

    return parse


def _flag(name: str) -> Callable[[str], bool]:
    def parse(text: str) -> bool:
        value = text.strip().lower()
        if value in ("1", "true", "yes", "on"):
            return True
        if value in ("0", "false", "no", "off", ""):
            return False
        raise ConfigurationError(f"{name} must be true or false, got {text!r}")

    return parse


def _whole(name: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            return int(text)
        except ValueError:
            raise ConfigurationError(f"{name} must be a whole number, got {text!r}") from None

    return parse


@dataclass(frozen=True)
class Knob:
    """One process setting: its flag attribute, its environment variable, its parser and its default."""

    name: str
    parse: Callable[[str], Any]
    default: Any  # or a callable that makes it when it is needed (the worker id holds this process's pid)

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()


PROCESS_KNOBS = (
    Knob("metrics_address", parse_address, DEFAULT_METRICS_ADDRESS),
    Knob("poll_interval", _seconds("poll_interval"), 30.0),
    # With --follow: failed cases are queued again after this long, doubling up to an hour (engine/service/follow.py).
    Knob("retry_failed_after", _seconds("retry_failed_after"), 60.0),
    Knob("progress_interval", _seconds("progress_interval"), 10.0),
    Knob("drain", _seconds("drain"), 30.0),
    Knob("log_level", _choice("log_level", LOG_LEVELS, upper=True), "INFO"),
    Knob("log_format", _choice("log_format", LOG_FORMATS), "auto"),
    # Take over display sets this job did not make when their titles match case titles (never by default, §10).
    Knob("adopt_existing", _flag("adopt_existing"), False),
    # This process among the job's workers on a shared (PostgreSQL) ledger: its leases, status and /metrics name it.
    Knob("worker_id", parse_worker_id, default_worker_id),
)
# Job-file keys that the environment may override (the rules and values stay in the job file: they are the job).
JOB_KEYS = ("base_url", "reader_study", "case_root", "ca_file")
ENGINE_KEYS = JOB_KNOBS
# Titles and image names that hold patient identifiers: blocked unless asked for (engine/plan/phi.py).
PHI_KEY = "dicom.allow_phi_titles"
PHI_ENV = ENV_PREFIX + "ALLOW_PHI_TITLES"
PHI_HELP = (
    "send case titles and DICOM image names that hold a PatientID / PatientName from the case's headers (or a "
    f"header field de-identification removes), with a warning, instead of blocking the case (env {PHI_ENV}; "
    "job file: allow_phi_titles in [dicom])"
)


def _require_token(token: str | None) -> str:
    if token is None:
        raise ConfigurationError(
            f"no API token: set {TOKEN_ENV}, or {TOKEN_FILE_ENV} (e.g. /run/secrets/gc_token), "
            "or pass --token-file PATH"
        )
    return token


@dataclass(frozen=True, kw_only=True)
class RunSettings:
    """What a run uses, after precedence. ``sources`` names where each value came from (for ``config show``)."""

    job: JobConfig
    # A Path, or a PostgreSQL DSN kept as a string: out of the repr, which would show its password (ledger_shown).
    ledger: LedgerLocation = field(repr=False)
    events: Path
    metrics_address: Address | None
    poll_interval: float
    retry_failed_after: float
    progress_interval: float
    drain: float
    log_level: str
    log_format: str
    adopt_existing: bool
    worker_id: str
    sources: Mapping[str, str]
    token_source: str | None
    token: str | None = field(default=None, repr=False)  # never in a repr, a log line or `config show`

    @property
    def transfer(self) -> TransferSettings:
        """The engine's settings: the job's knobs after precedence, with this process's drain and progress interval."""
        return self.job.engine.replace(
            drain_seconds=self.drain,
            progress_interval_seconds=self.progress_interval,
            adopt_existing=self.adopt_existing,
            dicom=self.job.dicom,
        )

    @property
    def ledger_shown(self) -> str:
        """The ledger as messages show it: a DSN without its password."""
        return shown_ledger(self.ledger)

    def require_token(self) -> str:
        return _require_token(self.token)

    def effective(self) -> dict[str, tuple[Any, str]]:
        """Every setting as ``name -> (printable value, source)``; the token masked."""
        job, knobs = self.job, self.job.engine
        shown: dict[str, Any] = {
            "job_file": str(job.job_file),
            "base_url": job.base_url,
            "reader_study": job.reader_study or None,
            "archive": job.archive or None,
            "case_root": str(job.case_root),
            "ca_file": None if job.ca_file is None else str(job.ca_file),
            "ledger": self.ledger_shown,
            "events": str(self.events),
            "token": MASK if self.token else None,
            "metrics_address": "off" if self.metrics_address is None else str(self.metrics_address),
            "poll_interval": self.poll_interval,
            "retry_failed_after": self.retry_failed_after,
            "progress_interval": self.progress_interval,
            "drain": self.drain,
            "log_level": self.log_level,
            "log_format": self.log_format,
            "adopt_existing": self.adopt_existing,
            "worker_id": self.worker_id,
            PHI_KEY: job.dicom.allow_phi_titles,
            **{f"engine.{key}": getattr(knobs, key) for key in ENGINE_KEYS},
            # None is the size-based default (engine/upload/import_deadline.py), which the job file spells "auto".
            "engine.import_timeout": "auto" if knobs.import_timeout is None else knobs.import_timeout,
        }
        sources = {
            **self.sources,
            "archive": JOB_FILE if job.archive else DEFAULT,  # no flag or variable overrides it
            "job_file": "command line",
            "token": self.token_source or "not set",
        }
        return {name: (value, sources[name]) for name, value in shown.items()}


def add_arguments(parser: argparse.ArgumentParser, *, token: bool = True) -> None:
    """The flags every command that runs a job accepts. Defaults are None so that 'not given' is visible."""
    add_ledger_argument(parser)
    parser.add_argument("--events", type=Path, help=EVENTS_HELP)
    parser.add_argument("--worker-id", metavar="ID", help=WORKER_ID_HELP)
    if token:
        parser.add_argument(
            "--token-file",
            type=Path,
            help=f"read the API token from this file (env {TOKEN_FILE_ENV}; default: ${TOKEN_ENV})",
        )
    parser.add_argument(
        "--metrics-address",
        metavar="HOST:PORT",
        help=f"serve /metrics, /healthz and /readyz here, or 'off' (env {ENV_PREFIX}METRICS_ADDRESS; "
        f"default {DEFAULT_METRICS_ADDRESS})",
    )
    parser.add_argument(
        "--poll-interval",
        metavar="SECONDS",
        help=f"with --follow: seconds between looks for new case folders (env {ENV_PREFIX}POLL_INTERVAL; default 30)",
    )
    parser.add_argument(
        "--retry-failed-after",
        metavar="SECONDS",
        help=f"with --follow: queue failed cases again after this long, doubling up to an hour (env "
        f"{ENV_PREFIX}RETRY_FAILED_AFTER; default 60)",
    )
    parser.add_argument(
        "--progress-interval",
        metavar="SECONDS",
        help=f"seconds between summary lines (env {ENV_PREFIX}PROGRESS_INTERVAL; default 10)",
    )
    parser.add_argument(
        "--drain",
        metavar="SECONDS",
        help=f"seconds in-flight parts may finish after the first stop signal (env {ENV_PREFIX}DRAIN; default 30)",
    )
    parser.add_argument(
        "--log-level", metavar="LEVEL", help=f"{', '.join(LOG_LEVELS)} (env {ENV_PREFIX}LOG_LEVEL; default INFO)"
    )
    parser.add_argument(
        "--adopt-existing",
        action="store_true",
        default=None,
        help="take over display sets this job did not make whose titles match case titles: only "
        f"sockets without a value are filled, never one with answers (env {ENV_PREFIX}"
        "ADOPT_EXISTING)",
    )
    parser.add_argument("--allow-phi-titles", action="store_true", default=None, help=PHI_HELP)
    parser.add_argument(
        "--import-timeout",
        metavar="SECONDS",
        help=f"seconds an import may take before its value fails, or 'auto': from each file's size and the server's "
        f"import times (env {ENV_PREFIX}IMPORT_TIMEOUT; job file: engine.import_timeout; default auto)",
    )
    parser.add_argument(
        "--log-format",
        metavar="FORMAT",
        help=f"json, text or auto: JSON lines unless stdout is a terminal (env {ENV_PREFIX}LOG_FORMAT; default auto)",
    )


def _flag_text(value: object) -> str | None:
    return None if value is None else str(value)


def _resolve_knob(
    knob: Knob, args: argparse.Namespace | None, environ: Mapping[str, str], sources: dict[str, str]
) -> Any:
    flag = _flag_text(getattr(args, knob.name, None))
    if flag is not None:
        sources[knob.name] = f"{FLAG} --{knob.name.replace('_', '-')}"
        return knob.parse(flag)
    if knob.env in environ:
        sources[knob.name] = f"{ENVIRONMENT} {knob.env}"
        try:
            return knob.parse(environ[knob.env])
        except ConfigurationError as exc:
            raise ConfigurationError(f"{knob.env}: {exc}") from None
    sources[knob.name] = DEFAULT
    return knob.parse(str(knob.default() if callable(knob.default) else knob.default))


def _raw_job(job_file: Path) -> dict[str, Any]:
    """The job file's keys as written, only to tell 'set in the job file' from 'defaulted' (load_job validates)."""
    with open(job_file, "rb") as handle:
        return tomllib.load(handle)


def _path_from_env(text: str) -> Path:
    # A path in the environment is relative to the working directory, as any path a shell hands over.
    return Path(text).expanduser().absolute()


def _override_job(job: JobConfig, environ: Mapping[str, str], sources: dict[str, str]) -> JobConfig:
    raw = _raw_job(job.job_file)
    for key in JOB_KEYS:
        sources[key] = JOB_FILE if key in raw else DEFAULT
    changes: dict[str, Any] = {}
    env = {key: environ[ENV_PREFIX + key.upper()] for key in JOB_KEYS if ENV_PREFIX + key.upper() in environ}
    for key, text in env.items():
        sources[key] = f"{ENVIRONMENT} {ENV_PREFIX}{key.upper()}"
        name = ENV_PREFIX + key.upper()
        if key == "base_url":
            try:
                changes[key] = _normalise_base_url(text, Path(name))
            except JobFileError as exc:
                raise ConfigurationError(str(exc)) from None
        elif key == "reader_study":
            if not text.strip():
                raise ConfigurationError(f"{name} is empty; set it to the reader study's slug or unset it")
            if job.archive:  # one target per job: a study's slug cannot quietly replace the archive it names
                raise ConfigurationError(
                    f"{name} is set, but {job.job_file} names archive = {job.archive!r} as its target; unset {name}"
                )
            changes[key] = text.strip()
        elif key == "case_root":
            changes[key] = _path_from_env(text).resolve()
        elif key == "ca_file":
            if not text.strip():  # an empty value switches a job file's private CA off (use the system's)
                changes[key] = None
                continue
            path = _path_from_env(text)
            if not path.is_file():
                raise ConfigurationError(f"{name}: the CA file {path} does not exist")
            changes[key] = path.resolve()
    engine_raw = raw.get("engine", {}) if isinstance(raw.get("engine"), Mapping) else {}
    knobs: dict[str, Any] = job.engine.knobs()
    for key in ENGINE_KEYS:
        name = f"{ENV_PREFIX}{key.upper()}"
        sources[f"engine.{key}"] = JOB_FILE if key in engine_raw else DEFAULT
        if name in environ:
            sources[f"engine.{key}"] = f"{ENVIRONMENT} {name}"
            text = environ[name]
            if key == "part_size":
                knobs[key] = parse_size(name, text)
            elif key == "import_timeout":
                knobs[key] = parse_import_timeout(name, text)
            elif key in SWITCH_KNOBS:
                knobs[key] = parse_switch(name, text)
            else:
                knobs[key] = _whole(name)(text)
    dicom_raw = raw.get("dicom", {}) if isinstance(raw.get("dicom"), Mapping) else {}
    sources[PHI_KEY] = JOB_FILE if "allow_phi_titles" in dicom_raw else DEFAULT
    if PHI_ENV in environ:
        sources[PHI_KEY] = f"{ENVIRONMENT} {PHI_ENV}"
        allowed = _flag(PHI_ENV)(environ[PHI_ENV])
        changes["dicom"] = dataclasses.replace(job.dicom, allow_phi_titles=allowed)
    try:
        changes["engine"] = TransferSettings.from_knobs(knobs)
    except ConfigurationError as exc:
        raise ConfigurationError(f"{exc} (set by the environment or {job.job_file})") from None
    return dataclasses.replace(job, **changes)


def _resolve_token(args: argparse.Namespace | None, environ: Mapping[str, str]) -> tuple[str | None, str | None]:
    flag = getattr(args, "token_file", None)
    if flag is not None:
        return load_token(flag, environ), f"{FLAG} --token-file {flag}"
    if environ.get(TOKEN_FILE_ENV, "").strip():
        path = environ[TOKEN_FILE_ENV].strip()
        return load_token(path, environ), f"{ENVIRONMENT} {TOKEN_FILE_ENV} ({path})"
    if environ.get(TOKEN_ENV, "").strip():
        return load_token(None, environ), f"{ENVIRONMENT} {TOKEN_ENV}"
    return None, None


def resolve(
    job_path: Path | str,
    args: argparse.Namespace | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    read_token: bool = True,
) -> RunSettings:
    """Loads the job file and applies the environment and the flags on top. Raises ConfigurationError naming the
    variable, flag or key that is wrong. ``read_token=False`` for commands that never talk to the server."""
    environ = os.environ if environ is None else environ
    sources: dict[str, str] = {}
    job = _override_job(load_job(job_path), environ, sources)
    flags: dict[str, Any] = vars(args) if args is not None else {}
    if flags.get("import_timeout") is not None:  # the one engine knob with a flag: a deadline is per run
        engine = job.engine.replace(import_timeout=parse_import_timeout("--import-timeout", flags["import_timeout"]))
        job, sources["engine.import_timeout"] = dataclasses.replace(job, engine=engine), f"{FLAG} --import-timeout"
    # The event log defaults to beside the ledger file (a container's one volume holds both), or to beside the job
    # file when the ledger is a database; a path in the environment is relative to the working directory.
    ledger: LedgerLocation = default_ledger_path(job.job_file)
    sources["ledger"] = DEFAULT
    if flags.get("ledger") is not None:
        ledger, sources["ledger"] = ledger_location(flags["ledger"]), f"{FLAG} --ledger"
    elif environ.get(f"{ENV_PREFIX}LEDGER", "").strip():
        ledger = ledger_location(os.path.expanduser(environ[f"{ENV_PREFIX}LEDGER"]))
        sources["ledger"] = f"{ENVIRONMENT} {ENV_PREFIX}LEDGER"
    events, sources["events"] = default_events(ledger, job.job_file), DEFAULT
    if flags.get("events") is not None:
        events, sources["events"] = Path(flags["events"]).absolute(), f"{FLAG} --events"
    elif environ.get(f"{ENV_PREFIX}EVENTS", "").strip():
        events, sources["events"] = _path_from_env(environ[f"{ENV_PREFIX}EVENTS"]), f"{ENVIRONMENT} {ENV_PREFIX}EVENTS"
    if getattr(args, "allow_phi_titles", None):
        job = dataclasses.replace(job, dicom=dataclasses.replace(job.dicom, allow_phi_titles=True))
        sources[PHI_KEY] = f"{FLAG} --allow-phi-titles"
    values = {knob.name: _resolve_knob(knob, args, environ, sources) for knob in PROCESS_KNOBS}
    token, token_source = _resolve_token(args, environ) if read_token else (None, None)
    return RunSettings(
        job=job, ledger=ledger, events=events, sources=sources, token=token, token_source=token_source, **values
    )


# ---------------------------------------------------------------------------------------- a server without a job
DEFAULT_BASE_URL = "https://grand-challenge.org/api/v1/"


@dataclass(frozen=True, kw_only=True)
class ServerSettings:
    """What ``export``, ``reorder`` and the Python API's ``ReaderStudy`` need: a server, its CA, the token and a study.
    ``sources`` names where each came from; a base URL nobody gave is the public Grand Challenge, and says so."""

    base_url: str
    ca_file: Path | None
    reader_study: str | None
    sources: Mapping[str, str]
    token: str | None = field(default=None, repr=False)
    archive: str | None = None  # the job file's ``archive = "slug"`` (a job aimed at an archive names no study)

    def require_token(self) -> str:
        return _require_token(self.token)

    def require_reader_study(self) -> str:
        if not self.reader_study and self.archive:
            raise ConfigurationError(
                f"the job file names archive {self.archive!r}, not a reader study: this command works on a reader "
                "study (pass --reader-study SLUG); 'gcbulk export --job' exports the archive"
            )
        if not self.reader_study:
            raise ConfigurationError(
                "no reader study: pass --reader-study SLUG (the last part of the study's URL), "
                f"set {ENV_PREFIX}READER_STUDY, or pass --job JOB.toml"
            )
        return self.reader_study


def resolve_server(
    *,
    job_file: Path | str | None = None,
    base_url: str | None = None,
    ca_file: Path | None = None,
    reader_study: str | None = None,
    token_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    read_token: bool = True,
) -> ServerSettings:
    """flag (the keyword arguments) > ``GCBULK_*`` > the job file (when given) > default, for a server connection.
    Raises ConfigurationError naming the flag, variable or key that is wrong."""
    environ = os.environ if environ is None else environ
    sources: dict[str, str] = {}
    job = _override_job(load_job(job_file), environ, {}) if job_file is not None else None
    if base_url is not None:
        try:
            url, sources["base_url"] = _normalise_base_url(base_url, Path("--base-url")), f"{FLAG} --base-url"
        except JobFileError as exc:
            raise ConfigurationError(str(exc)) from None
    elif job is not None:  # the job already applied GCBULK_BASE_URL over its own
        url, sources["base_url"] = job.base_url, f"{JOB_FILE} {job.job_file}"
    elif environ.get(f"{ENV_PREFIX}BASE_URL", "").strip():
        try:
            url = _normalise_base_url(environ[f"{ENV_PREFIX}BASE_URL"], Path(f"{ENV_PREFIX}BASE_URL"))
        except JobFileError as exc:
            raise ConfigurationError(str(exc)) from None
        sources["base_url"] = f"{ENVIRONMENT} {ENV_PREFIX}BASE_URL"
    else:
        url, sources["base_url"] = DEFAULT_BASE_URL, DEFAULT
    ca: Path | None
    if ca_file is not None:
        ca, sources["ca_file"] = Path(ca_file).absolute(), f"{FLAG} --ca-file"
        if not ca.is_file():
            raise ConfigurationError(f"--ca-file: the CA file {ca} does not exist")
    elif job is not None:
        ca, sources["ca_file"] = job.ca_file, JOB_FILE
    elif environ.get(f"{ENV_PREFIX}CA_FILE", "").strip():
        ca, sources["ca_file"] = _path_from_env(environ[f"{ENV_PREFIX}CA_FILE"]), f"{ENVIRONMENT} {ENV_PREFIX}CA_FILE"
        if not ca.is_file():
            raise ConfigurationError(f"{ENV_PREFIX}CA_FILE: the CA file {ca} does not exist")
    else:
        ca, sources["ca_file"] = None, DEFAULT
    if reader_study is not None:
        study, sources["reader_study"] = reader_study.strip(), f"{FLAG} --reader-study"
    elif job is not None:
        study, sources["reader_study"] = job.reader_study, JOB_FILE
    elif environ.get(f"{ENV_PREFIX}READER_STUDY", "").strip():
        study = environ[f"{ENV_PREFIX}READER_STUDY"].strip()
        sources["reader_study"] = f"{ENVIRONMENT} {ENV_PREFIX}READER_STUDY"
    else:
        study, sources["reader_study"] = None, DEFAULT
    flags = argparse.Namespace(token_file=token_file)
    token, token_source = _resolve_token(flags, environ) if read_token else (None, None)
    sources["token"] = token_source or "not set"
    archive = job.archive or None if job is not None else None
    return ServerSettings(base_url=url, ca_file=ca, reader_study=study, sources=sources, token=token, archive=archive)
