"""``gcbulk copy``: a reader study's display sets or an archive's items into another study or archive, moving no
bytes — each image value names the source's image by its API URL (docs/gc-api.md §12), each JSON value is copied as
it is.

A copy is a job like any other, on the same engine: its "case tree" is the source's listing. Each source container
becomes a planned case (its title from the template, its folder the source's pk) whose image items carry the image's
URL instead of files (``engine/upload/values_patch.py`` ``refers_to_image``); the plan goes into a ledger, and the
transfer engine creates the target's containers, PATCHes the values, waits until they show, and resumes after a kill
from what the ledger recorded. Containers already in the target under a case's title are adopted only when this job
made them (the engine's own rules).

The copy job file::

    base_url = "https://grand-challenge.org/api/v1/"
    from = "archive:my-archive"          # or --from; archive:SLUG or reader-study:SLUG
    to = "reader-study:my-study"         # or --to
    title = "{title}"                    # {title}: the source's title, {pk}: its pk
    include = ["patient*"]               # globs over the source titles (default: all)
    exclude = []
    [sockets]                            # source socket = target socket; without this table every socket is copied
    "ct-image" = "ct-image"              #   under its own slug
    [engine]                             # the run's knobs, as in a job file
    # from_base_url = "https://other.example/api/v1/"   # a source on another server: images move through here
"""

from __future__ import annotations

import json
import string
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from gcbulk.engine.gc.client import display_set_title, socket_slug_of
from gcbulk.engine.gc.errors import ConfigurationError
from gcbulk.engine.gc.target_ref import TargetRef, TargetRefError
from gcbulk.engine.jobfile import (
    JobFileError,
    _normalise_base_url,  # the job file's own rules for these keys: one reading of base_url and [engine]
    _parse_engine,
    _reject_unknown,
    _table,
)
from gcbulk.engine.plan.cases import PlannedCase, PlannedItem
from gcbulk.engine.plan.titles import natural_title_key
from gcbulk.engine.upload.transfer_settings import TransferSettings
from gcbulk.engine.upload.values_patch import FILE, IMAGE, VALUE
from gcbulk.state.records import JobBinding

TITLE_FIELDS = ("title", "pk")
# Job files are a few hundred bytes; a larger one is not a copy job file (and is not read whole).
MAX_JOB_FILE_BYTES = 1024 * 1024


@dataclass(frozen=True, kw_only=True)
class CopyJob:
    job_file: Path
    base_url: str
    source: TargetRef
    target: TargetRef
    ca_file: Path | None = None
    # The source's server when it is another than the target's (``from_base_url``): the images then travel through
    # this machine (``engine/service/copy_bytes.py``); its token is GCBULK_FROM_AUTHORIZATION or --from-token-file.
    from_base_url: str | None = None
    from_ca_file: Path | None = None
    title: str = "{title}"
    sockets: Mapping[str, str] | None = None  # source slug → target slug; None: every socket, same slug
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    engine: TransferSettings = field(default_factory=TransferSettings)

    @property
    def moves_bytes(self) -> bool:
        """Whether the images travel through this machine: the source is on another server."""
        return self.from_base_url is not None and self.from_base_url != self.base_url

    @property
    def staging(self) -> Path:
        """Where a copy across servers keeps the images it downloaded: its case root."""
        return self.job_file.with_name(f"{self.job_file.stem}.copy-files")

    @property
    def binding(self) -> JobBinding:
        """The ledger's binding: the target (``TargetRef.ledger_key``), the server, and the source as its case root
        (the staging folder when the images travel through this machine)."""
        root = str(self.staging) if self.moves_bytes else f"copy-from {self.source.spec}"
        return JobBinding(reader_study=self.target.ledger_key, base_url=self.base_url, case_root=root)

    def record(self) -> dict[str, Any]:
        """What the ledger keeps of the job's mapping at each plan."""
        return {
            "copy": {
                "from": self.source.spec,
                "title": self.title,
                "sockets": None if self.sockets is None else dict(self.sockets),
                "include": list(self.include),
                "exclude": list(self.exclude),
            }
        }


def load_copy_job(path: Path | str, *, source: str | None = None, target: str | None = None) -> CopyJob:
    """Reads a copy job file; ``source``/``target`` (``--from``/``--to``) override its ``from``/``to``.
    Raises JobFileError naming the key and what to write."""
    job_file = Path(path).absolute()
    try:
        with open(job_file, "rb") as handle:
            raw = handle.read(MAX_JOB_FILE_BYTES + 1)
    except OSError as exc:
        raise JobFileError(f"copy job file {job_file} cannot be read: {exc.strerror}") from None
    if len(raw) > MAX_JOB_FILE_BYTES:
        raise JobFileError(f"copy job file {job_file} is larger than 1 MiB: not a job file")
    try:
        data = tomllib.loads(raw.decode())
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise JobFileError(f"copy job file {job_file} is not valid TOML: {exc}") from None
    known = {"base_url", "ca_file", "from_base_url", "from_ca_file", "from", "to", "title", "include", "exclude"}
    known |= {"sockets", "engine"}
    _reject_unknown("", data, known, job_file)
    ends = {}
    for key, flag, given in (("from", "--from", source), ("to", "--to", target)):
        spec = given if given is not None else data.get(key)
        if not isinstance(spec, str):
            raise JobFileError(
                f"{job_file}: say where to copy {key}: {flag} archive:SLUG|reader-study:SLUG, or {key} = …"
            )
        try:
            ends[key] = TargetRef.parse_spec(spec)
        except TargetRefError as exc:
            raise JobFileError(f"{job_file}: {key}: {exc}") from None
    if ends["from"] == ends["to"]:
        raise JobFileError(f"{job_file}: from and to are both {ends['from'].spec}; a copy needs two places")
    ca_file, from_ca_file = (_ca_file(data, key, job_file) for key in ("ca_file", "from_ca_file"))
    title = data.get("title", "{title}")
    if not isinstance(title, str):
        raise JobFileError(f'{job_file}: title must be a string such as "{{title}}"')
    _check_title_template(title, job_file)
    sockets = None
    if "sockets" in data:
        table = _table(data, "sockets", job_file)
        if not table or not all(isinstance(v, str) and v for v in table.values()):
            raise JobFileError(f'{job_file}: [sockets] maps source sockets to target sockets: "ct-image" = "ct-image"')
        sockets = dict(table)
    return CopyJob(
        job_file=job_file,
        base_url=_normalise_base_url(data.get("base_url"), job_file),
        source=ends["from"],
        target=ends["to"],
        ca_file=ca_file,
        from_base_url=(
            None if data.get("from_base_url") is None else _normalise_base_url(data["from_base_url"], job_file)
        ),
        from_ca_file=from_ca_file,
        title=title,
        sockets=sockets,
        include=_globs(data, "include", job_file),
        exclude=_globs(data, "exclude", job_file),
        engine=_parse_engine(_table(data, "engine", job_file), job_file),
    )


def _ca_file(data: Mapping[str, Any], key: str, job_file: Path) -> Path | None:
    if data.get(key) is None:
        return None
    path = (job_file.parent / str(data[key])).resolve()
    if not path.is_file():
        raise JobFileError(f"{job_file}: {key} {path} does not exist")
    return path


def _check_title_template(template: str, job_file: Path) -> None:
    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:
        raise JobFileError(f"{job_file}: title {template!r}: {exc}") from None
    unknown = [name for name in fields if name not in TITLE_FIELDS]
    if unknown or not fields:
        raise JobFileError(
            f"{job_file}: title {template!r} must use {{title}} or {{pk}} (and nothing else in braces), so each copy "
            "gets its own title"
        )


def _globs(data: Mapping[str, Any], key: str, job_file: Path) -> tuple[str, ...]:
    value = data.get(key, [])
    if not isinstance(value, list) or not all(isinstance(each, str) for each in value):
        raise JobFileError(f'{job_file}: {key} is a list of globs over the source titles, e.g. {key} = ["patient*"]')
    return tuple(value)


def copy_cases(job: CopyJob, containers: Iterable[Mapping[str, Any]]) -> list[PlannedCase]:
    """The planned cases of a copy, from the source's listing (pure: no network, no ledger). Raises
    ConfigurationError for what cannot be copied without bytes: a file socket, a container without a title."""
    cases = []
    for container in containers:
        source_title = display_set_title(dict(container)) or ""
        if job.include and not any(fnmatchcase(source_title, glob) for glob in job.include):
            continue
        if any(fnmatchcase(source_title, glob) for glob in job.exclude):
            continue
        pk = str(container["pk"])
        title = job.title.format(title=source_title, pk=pk).strip()
        if not title:
            raise ConfigurationError(
                f"{job.source.label}: {job.source.container_noun} {pk} has no title, and the title template "
                f'{job.title!r} gives it none; use a template with {{pk}}, e.g. title = "copy-{{pk}}"'
            )
        items = [item for value in container.get("values") or [] if (item := _copied(job, pk, value)) is not None]
        cases.append(PlannedCase(title=title, folder=pk, items=tuple(items)))
    if job.source.is_archive:
        # An archive's items have no order of their own (the listing's is the server's, not the user's): the copy
        # plans them by title in natural order (patient2 before patient10), so a reader study made from an archive
        # reads the same on every run. A reader study's own display-set order is kept as listed.
        cases.sort(key=lambda case: (natural_title_key(case.title), case.folder))  # as reorder --by natural-title
    return cases


def _copied(job: CopyJob, pk: str, value: Mapping[str, Any]) -> PlannedItem | None:
    slug = socket_slug_of(dict(value))
    if slug is None or (job.sockets is not None and slug not in job.sockets):
        return None
    socket = value.get("interface")
    kind = socket.get("super_kind") if isinstance(socket, dict) else None
    target_slug = job.sockets[slug] if job.sockets is not None else slug
    if kind == IMAGE and isinstance(value.get("image"), str):
        # The image's API URL: the target's value names it, and the server links it (docs/gc-api.md §12).
        return PlannedItem(socket_slug=target_slug, value_json=json.dumps(value["image"]), super_kind=IMAGE)
    if kind == VALUE:
        return PlannedItem(socket_slug=target_slug, value_json=json.dumps(value.get("value")), super_kind=VALUE)
    what = "a file" if kind == FILE else f"a value of kind {kind!r}"
    raise ConfigurationError(
        f"{job.source.label}: {job.source.container_noun} {pk} holds {what} in socket {slug!r}, which gcbulk copy "
        "does not copy (it copies images and JSON values); list the sockets to copy in the job's [sockets] table"
    )
