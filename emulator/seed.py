"""Loads the users, sockets, reader studies, questions and archives an emulator starts with, from a TOML file.

See ``example.toml`` for the format. Users without a ``token`` get a random one, printed at start. Socket kinds and
answer types are the server's labels ("Segmentation", "Multiple choice"); a study or question may set any of the
optional fields listed in ``STUDY_OPTIONS`` / ``QUESTION_OPTIONS`` (the API shows them, clients may rely on them).
"""

from __future__ import annotations

import secrets
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gcbulk.emulator.answer_types import ANSWER_TYPES
from gcbulk.emulator.socket_kinds import KIND_CODES, SUPER_KINDS
from gcbulk.emulator.store import (
    Archive,
    DisplaySet,
    Option,
    Question,
    ReaderStudy,
    Socket,
    Store,
    User,
    new_uuid,
)

EXAMPLE_SEED = Path(__file__).with_name("example.toml")


# Optional fields a seed may set, as they are named on the store's dataclasses.
STUDY_OPTIONS = (
    "help_text",
    "end_of_study_text",
    "is_educational",
    "instant_verification",
    "allow_answer_modification",
    "enable_autosaving",
    "allow_case_navigation",
    "allow_show_all_annotations",
    "roll_over_answers_for_n_cases",
)
QUESTION_OPTIONS = (
    "direction",
    "default_annotation_color",
    "answer_min_value",
    "answer_max_value",
    "answer_step_size",
    "answer_min_length",
    "answer_max_length",
    "answer_match_pattern",
    "empty_answer_confirmation",
    "empty_answer_confirmation_label",
    "overlay_segments",
)


class SeedError(ValueError):
    """The seed file is malformed; the message names the entry and what to fix."""


def _required(entry: dict[str, Any], key: str, where: str) -> Any:
    if key not in entry:
        raise SeedError(f"{where}: missing '{key}'; add it to the seed file")
    return entry[key]


def load_seed(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise SeedError(f"seed file {path} does not exist; pass an existing TOML file to --seed-study") from None
    except tomllib.TOMLDecodeError as exc:
        raise SeedError(f"seed file {path} is not valid TOML: {exc}") from None


def apply_seed(store: Store, seed: dict[str, Any]) -> None:
    for index, entry in enumerate(seed.get("users", [])):
        where = f"users[{index}]"
        user = User(
            pk=store.next_int_pk(),
            username=_required(entry, "username", where),
            token=entry.get("token") or secrets.token_hex(20),
            verified=entry.get("verified", True),
        )
        if user.token in store.users_by_token:
            raise SeedError(f"{where}: token of '{user.username}' is already used by another user")
        store.users_by_token[user.token] = user

    for index, entry in enumerate(seed.get("sockets", [])):
        where = f"sockets[{index}]"
        slug = _required(entry, "slug", where)
        super_kind = _required(entry, "super_kind", where)
        if super_kind not in SUPER_KINDS:
            raise SeedError(f"{where}: super_kind must be Image, File or Value, not {super_kind!r}")
        kind = _required(entry, "kind", where)
        if kind not in KIND_CODES:
            raise SeedError(f"{where}: kind {kind!r} is not a socket kind; use one of {', '.join(KIND_CODES)}")
        store.sockets[slug] = Socket(
            pk=store.next_int_pk(),
            slug=slug,
            title=entry.get("title", slug.replace("-", " ").title()),
            kind=kind,
            super_kind=super_kind,
            relative_path=entry.get("relative_path", slug),
            description=entry.get("description", ""),
            default_value=entry.get("default_value"),
            schema=entry.get("schema"),
            overlay_segments=_overlay_segments(entry, where),
        )

    for index, entry in enumerate(seed.get("reader_studies", [])):
        where = f"reader_studies[{index}]"
        study = ReaderStudy(
            pk=new_uuid(),
            slug=_required(entry, "slug", where),
            title=entry.get("title", entry["slug"]),
            description=entry.get("description", ""),
            **{key: entry[key] for key in STUDY_OPTIONS if key in entry},
        )
        for role, members in (("editors", study.editor_pks), ("readers", study.reader_pks)):
            for username in entry.get(role, []):
                user = store.user_by_username(username)
                if user is None:
                    raise SeedError(f"{where}.{role}: no user '{username}'; declare it under [[users]]")
                members.add(user.pk)
        store.reader_studies[study.pk] = study
        _existing_display_sets(store, study, entry, where)
        for q_index, q_entry in enumerate(entry.get("questions", [])):
            question = _question(store, study, q_entry, f"{where}.questions[{q_index}]")
            store.questions[question.pk] = question
            study.question_pks.append(question.pk)

    for index, entry in enumerate(seed.get("archives", [])):
        where = f"archives[{index}]"
        slug = _required(entry, "slug", where)
        if store.archive_by_slug(slug) is not None:
            raise SeedError(f"{where}: archive slug '{slug}' is declared twice; slugs are unique on the server")
        archive = Archive(
            pk=new_uuid(), slug=slug, title=entry.get("title", slug), description=entry.get("description", "")
        )
        # The archive's three groups (docs/gc-api.md §12).
        for role, members in (
            ("editors", archive.editor_pks),
            ("uploaders", archive.uploader_pks),
            ("users", archive.user_pks),
        ):
            for username in entry.get(role, []):
                user = store.user_by_username(username)
                if user is None:
                    raise SeedError(f"{where}.{role}: no user '{username}'; declare it under [[users]]")
                members.add(user.pk)
        store.archives[archive.pk] = archive


def _existing_display_sets(store: Store, study: ReaderStudy, entry: dict[str, Any], where: str) -> None:
    """``display_sets = N``: the study starts with N display sets someone else made ("existing 1" … "existing N",
    ordered 10, 20, … and holding no values): a big study to list, for the benchmarks (``benchmarks/memory_growth.py
    --existing-display-sets``)."""
    count = entry.get("display_sets", 0)
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        raise SeedError(f"{where}.display_sets: a number of display sets (0 or more), not {count!r}")
    created = datetime.now(UTC)
    for number in range(1, count + 1):
        display_set = DisplaySet(
            pk=new_uuid(), reader_study_pk=study.pk, title=f"existing {number}", order=10 * number, created=created
        )
        store.display_sets[display_set.pk] = display_set


def _overlay_segments(entry: dict[str, Any], where: str) -> list[dict[str, Any]]:
    """The socket's overlay, as the server keeps it: ``[{name, visible, voxel_value}]`` with integer voxel values."""
    segments = entry.get("overlay_segments", [])
    if not isinstance(segments, list) or not all(
        isinstance(s, dict) and isinstance(s.get("voxel_value"), int) for s in segments
    ):
        raise SeedError(f"{where}: overlay_segments must be a list of {{name = ..., voxel_value = <int>}} tables")
    return [
        {
            "name": s.get("name", str(s["voxel_value"])),
            "visible": s.get("visible", True),
            "voxel_value": s["voxel_value"],
        }
        for s in segments
    ]


def _question(store: Store, study: ReaderStudy, entry: dict[str, Any], where: str) -> Question:
    answer_type = _required(entry, "answer_type", where)
    if answer_type not in ANSWER_TYPES:
        raise SeedError(f"{where}: answer_type {answer_type!r} is not one of {', '.join(ANSWER_TYPES)}")
    interface = entry.get("interface")
    if interface is not None and interface not in store.sockets:
        raise SeedError(f"{where}: no socket {interface!r}; declare it under [[sockets]]")
    options = []
    for option in entry.get("options", []):
        # An option is its title, or a table {title = "...", default = true}.
        if isinstance(option, str):
            title, default = option, False
        elif isinstance(option, dict):
            title, default = option.get("title"), option.get("default", False)
        else:
            title, default = None, False
        if not isinstance(title, str):
            raise SeedError(f"{where}.options: each option is a title or {{title = ..., default = ...}}")
        options.append(Option(id=store.next_int_pk(), title=title, default=bool(default)))
    return Question(
        pk=new_uuid(),
        reader_study_pk=study.pk,
        question_text=_required(entry, "text", where),
        answer_type=answer_type,
        options=options,
        required=entry.get("required", True),
        help_text=entry.get("help_text", ""),
        interface_slug=interface,
        image_port=entry.get("image_port"),
        widget=entry.get("widget"),
        **{key: entry[key] for key in QUESTION_OPTIONS if key in entry},
    )
