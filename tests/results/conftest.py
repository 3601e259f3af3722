"""Fixtures for the results side: the example study grown to every answer type, display sets, answers, masks.

Every test that uses the emulator runs against both schema modes (``current`` and ``2025-11``, docs/gc-api.md §8/§9).
Display sets and extra questions are put straight into the in-process emulator's store (fast, and the upload side
has its own tests); answers come from the emulator's admin helper (``emulator/admin_answers.py``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest

from gcbulk.emulator.admin_answers import create_answer
from gcbulk.emulator.answer_types import ANSWER_TYPES, NON_ANSWERABLE_TYPES
from gcbulk.emulator.context import SCHEMAS
from gcbulk.emulator.server import RunningEmulator
from gcbulk.emulator.store import (
    Answer,
    DisplaySet,
    Option,
    Question,
    ReaderStudy,
    SocketValue,
    new_uuid,
)
from gcbulk.emulator.value_set_fields import title_errors
from gcbulk.engine.gc.client import GrandChallengeClient
from gcbulk.engine.gc.retry import RetryPolicy
from gcbulk.engine.results.export import (
    ExportOptions,
    ExportSummary,
    export_reader_study,
)
from tests.imaging import make_mha

STUDY = "example-study"
# Small but real: waits are milliseconds, so retries cost nothing in tests.
FAST_RETRIES = RetryPolicy(base_delay=0.001, max_delay=0.01)


@pytest.fixture(params=SCHEMAS)
def emulator_schema(request: pytest.FixtureRequest) -> str:
    return request.param


@dataclass
class World:
    """The example study on a running emulator, with helpers to add display sets and answers."""

    emulator: RunningEmulator
    tmp_path: Path
    display_sets: list[DisplaySet] = field(default_factory=list)

    @property
    def context(self) -> Any:
        return self.emulator.context

    @property
    def store(self) -> Any:
        return self.emulator.context.store

    @property
    def study(self) -> ReaderStudy:
        study = self.store.reader_study_by_slug(STUDY)
        assert study is not None
        return study

    def questions(self) -> list[Question]:
        return [self.store.questions[pk] for pk in self.study.question_pks]

    def question(self, answer_type: str) -> Question:
        return next(q for q in self.questions() if q.answer_type == answer_type)

    def add_every_answer_type(self) -> None:
        """Adds a question of each answer type of docs/gc-api.md §3 that the example study lacks."""
        present = {q.answer_type for q in self.questions()}
        for answer_type in ANSWER_TYPES:
            if answer_type in present:
                continue
            options = (
                [Option(self.store.next_int_pk(), title) for title in ("Left", "Right")]
                if "choice" in answer_type.lower()
                else []
            )
            question = Question(
                pk=new_uuid(),
                reader_study_pk=self.study.pk,
                question_text=f"{answer_type} question",
                answer_type=answer_type,
                options=options,
                required=False,
            )
            self.store.questions[question.pk] = question
            self.study.question_pks.append(question.pk)

    def add_display_sets(self, titles: list[str], *, start_order: int = 10) -> list[DisplaySet]:
        created = []
        for index, title in enumerate(titles):
            # Straight into the store, so only titles the server's POST would take (no NUL, ≤ 255 characters).
            assert not title_errors(title), (title, title_errors(title))
            display_set = DisplaySet(
                pk=new_uuid(),
                reader_study_pk=self.study.pk,
                title=title,
                order=start_order + 10 * index,
                created=self.context.clock.now(),
            )
            display_set.values["patient-age"] = SocketValue(
                pk=self.store.next_int_pk(), socket_slug="patient-age", value=40 + index
            )
            self.store.display_sets[display_set.pk] = display_set
            created.append(display_set)
        self.display_sets.extend(created)
        return created

    def mask_file(self, name: str = "mask.mha", shape: tuple[int, ...] = (4, 32, 32), seed: int = 0) -> Path:
        return make_mha(self.tmp_path / "masks-in" / name, shape, dtype="uint8", seed=seed)

    async def answer_all(
        self,
        creators: list[str],
        display_sets: list[DisplaySet] | None = None,
        *,
        masks: bool = True,
        is_ground_truth: bool = False,
    ) -> list[Answer]:
        """Every answerable question of each display set, for each creator (Mask answers get a real image)."""
        created = []
        mask = self.mask_file() if masks else None
        for variant, display_set in enumerate(display_sets or self.display_sets):
            for creator in creators:
                for question in self.questions():
                    if question.answer_type in NON_ANSWERABLE_TYPES:
                        continue
                    is_mask = question.answer_type == "Mask"
                    if is_mask and mask is None:
                        continue
                    created.append(
                        await create_answer(
                            self.context,
                            creator=creator,
                            question_pk=question.pk,
                            display_set_pk=display_set.pk,
                            is_ground_truth=is_ground_truth,
                            variant=variant,
                            mask_file=mask if is_mask else None,
                        )
                    )
        return created

    def client(self, user: str = "editor", **options: Any) -> GrandChallengeClient:
        options.setdefault("retry_policy", FAST_RETRIES)
        return GrandChallengeClient(
            base_url=self.emulator.base_url, token=self.emulator.tokens[user], ca_file=self.emulator.ca_file, **options
        )

    async def export(
        self, out_dir: Path, user: str = "editor", *, mine: bool = False, **client_options: Any
    ) -> ExportSummary:
        async with self.client(user, **client_options) as client:
            return await export_reader_study(client, ExportOptions(reader_study=STUDY, out_dir=out_dir, mine=mine))

    def requests(self, name: str) -> int:
        """How many requests the emulator saw for ``"<METHOD> <site>:<route>"`` (see emulator/counters.py)."""
        return self.context.counters.requests[name]


@pytest.fixture
def world(emulator: RunningEmulator, tmp_path: Path) -> World:
    return World(emulator, tmp_path)


IMAGE_DETAIL = "GET api:/api/v1/cases/images/{pk}/"
S3_GET = "GET s3:/{bucket}/{key}"
ANSWER_LIST = "GET api:/api/v1/reader-studies/answers/"
DISPLAY_SET_PATCH = "PATCH api:/api/v1/reader-studies/display-sets/{pk}/"


def image_file_route() -> str:
    return "GET api:/media/images/{aa}/{bb}/{pk}/{path}"


def stored_object_bytes(world: World, image_pk: str) -> bytes:
    """The bytes the emulator serves for an image's (only) file."""
    from gcbulk.emulator.objects import IMAGES_BUCKET

    image = world.store.images[image_pk]
    return world.context.objects.object_path(IMAGES_BUCKET, image.files[0].object_key).read_bytes()


@asynccontextmanager
async def faults(world: World, *rules: dict[str, Any]) -> AsyncIterator[None]:
    """Fault rules in force for the block (emulator/faults.py)."""
    from gcbulk.emulator.faults import FaultRule

    world.context.faults.replace([FaultRule(**rule) for rule in rules])
    try:
        yield
    finally:
        world.context.faults.replace([])


async def eventually(check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    """Polls ``check`` until it holds; fails naming ``what`` after ``timeout`` seconds (no fixed sleeps)."""
    with anyio.fail_after(timeout):
        while not check():
            await anyio.sleep(0.01)
