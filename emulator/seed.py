"""Loads the users, sockets, reader studies and questions an emulator starts with, from a TOML file.

See ``example.toml`` for the format. Users without a ``token`` get a random one, printed at start.
"""

from __future__ import annotations

import secrets
import tomllib
from pathlib import Path
from typing import Any

from emulator.store import Option, Question, ReaderStudy, Socket, Store, User, new_uuid

EXAMPLE_SEED = Path(__file__).with_name("example.toml")


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
        if super_kind not in ("Image", "File", "Value"):
            raise SeedError(f"{where}: super_kind must be Image, File or Value, not {super_kind!r}")
        store.sockets[slug] = Socket(
            pk=store.next_int_pk(),
            slug=slug,
            title=entry.get("title", slug.replace("-", " ").title()),
            kind=_required(entry, "kind", where),
            super_kind=super_kind,
            relative_path=entry.get("relative_path", slug),
            description=entry.get("description", ""),
            default_value=entry.get("default_value"),
            schema=entry.get("schema"),
        )

    for index, entry in enumerate(seed.get("reader_studies", [])):
        where = f"reader_studies[{index}]"
        study = ReaderStudy(
            pk=new_uuid(),
            slug=_required(entry, "slug", where),
            title=entry.get("title", entry["slug"]),
            description=entry.get("description", ""),
        )
        for role, members in (("editors", study.editor_pks), ("readers", study.reader_pks)):
            for username in entry.get(role, []):
                user = store.user_by_username(username)
                if user is None:
                    raise SeedError(f"{where}.{role}: no user '{username}'; declare it under [[users]]")
                members.add(user.pk)
        store.reader_studies[study.pk] = study
        for q_index, q_entry in enumerate(entry.get("questions", [])):
            q_where = f"{where}.questions[{q_index}]"
            question = Question(
                pk=new_uuid(),
                reader_study_pk=study.pk,
                question_text=_required(q_entry, "text", q_where),
                answer_type=_required(q_entry, "answer_type", q_where),
                options=[
                    Option(id=store.next_int_pk(), title=title, default=False)
                    for title in q_entry.get("options", [])
                ],
                required=q_entry.get("required", True),
                help_text=q_entry.get("help_text", ""),
                interface_slug=q_entry.get("interface"),
                image_port=q_entry.get("image_port"),
                widget=q_entry.get("widget"),
            )
            store.questions[question.pk] = question
            study.question_pks.append(question.pk)
