"""The emulator's domain objects, held in memory.

Only part bytes and image files live on disk (``objects.ObjectStore``); everything else is plain dataclasses in a
``Store``. A restart of the emulator therefore forgets uploads and display sets, which is fine for a test stand-in:
the client's resume logic is exercised by killing the *client*, not the server.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

# Display strings of the server's enums (docs/gc-api.md §1, §2): the API shows these, never the integers.
UPLOAD_INITIALIZED = "Initialized"
UPLOAD_COMPLETED = "Completed"
UPLOAD_ABORTED = "Aborted"

SESSION_QUEUED = "Queued"
SESSION_REQUEUED = "Re-Queued"
SESSION_FAILED = "Failed"
SESSION_SUCCEEDED = "Succeeded"
SESSION_CANCELLED = "Cancelled"
SESSION_ACTIVE = (SESSION_QUEUED, SESSION_REQUEUED)


def new_uuid() -> str:
    return str(uuid.uuid4())


@dataclass
class User:
    pk: int
    username: str
    token: str
    # Unverified users get the 2 GiB byte quota, verified ones 128 GiB (docs/gc-api.md §1).
    verified: bool = True


@dataclass
class Socket:
    """A ComponentInterface (docs/gc-api.md §3). ``super_kind`` is Image, File or Value."""

    pk: int
    slug: str
    title: str
    kind: str
    super_kind: str
    relative_path: str
    description: str = ""
    default_value: Any = None
    schema: dict[str, Any] | None = None
    overlay_segments: list[Any] = field(default_factory=list)
    look_up_table: Any = None


@dataclass
class Upload:
    """A UserUpload: one S3 multipart upload owned by ``creator``."""

    pk: str
    creator: User
    filename: str
    created: datetime
    status: str
    s3_upload_id: str

    @property
    def key(self) -> str:
        return f"uploads/{self.creator.pk}/{self.pk}"


@dataclass
class ImageFile:
    pk: str
    image_pk: str
    filename: str
    image_type: str  # MHD | TIFF | DZI
    object_key: str  # in the images bucket: images/<pk[0:2]>/<pk[2:4]>/<image pk>/<file pk>/<filename>


@dataclass
class Image:
    """A cases.Image: what the importer built from an upload session (docs/gc-api.md §4, §8)."""

    pk: str
    name: str
    creator: User
    origin_session_pk: str | None
    width: int | None
    height: int | None
    depth: int | None
    color_space: str | None  # GRAY | RGB | RGBA | YCBCR
    modality: str | None  # shown as {"modality": ...} (docs/gc-api.md §8)
    voxel_width_mm: float | None
    voxel_height_mm: float | None
    voxel_depth_mm: float | None
    shape: list[int]
    shape_without_color: list[int]
    files: list[ImageFile] = field(default_factory=list)
    # Members (editors and readers) of these studies may view the image: it is shown in one of their display sets.
    reader_study_pks: set[str] = field(default_factory=set)
    # Editors of these studies may view the image: it is the answer image of an answer in the study.
    answer_study_pks: set[str] = field(default_factory=set)
    # Members (editors, uploaders and users) of these archives may view the image: an item of theirs shows it.
    archive_pks: set[str] = field(default_factory=set)
    eye_choice: str = "NA"
    stereoscopic_choice: str | None = None
    field_of_view: str | None = None
    window_center: float | None = None
    window_width: float | None = None
    segments: list[int] | None = None
    element_type: str = ""  # the SimpleITK pixel type, e.g. "16-bit signed integer", to verify imports by
    # A DICOM Image Set's id and its instances (SOP Instance UID, object key), as stored (emulator/dicom_sets.py).
    dicom_image_set_id: str | None = None
    dicom_instances: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class UploadSession:
    """A RawImageUploadSession (docs/gc-api.md §2)."""

    pk: str
    creator: User
    created: datetime
    upload_pks: list[str]
    status: str = SESSION_QUEUED
    error_message: str = ""  # "" by default, never null (docs/gc-api.md §10)
    image_pks: list[str] = field(default_factory=list)
    # Where the imported image goes once processing succeeds.
    target_display_set_pk: str | None = None
    target_socket_slug: str | None = None
    target_answer_pk: str | None = None
    # An archive: every image becomes a new item (docs/gc-api.md §12); an archive item: like a display set.
    target_archive_pk: str | None = None
    target_archive_item_pk: str | None = None

    @property
    def target_value_set_pk(self) -> str | None:
        """The display set or archive item whose ``target_socket_slug`` value the imported image becomes."""
        return self.target_display_set_pk or self.target_archive_item_pk


@dataclass
class Option:
    id: int
    title: str
    default: bool = False


@dataclass
class Question:
    pk: str
    reader_study_pk: str
    question_text: str
    answer_type: str  # the display string, e.g. "Multiple choice" (docs/gc-api.md §3)
    options: list[Option] = field(default_factory=list)
    required: bool = True
    help_text: str = ""
    interface_slug: str | None = None
    image_port: str | None = None  # display string: Main, Secondary, ...
    widget: str | None = None  # display string, e.g. "Radio Select"
    direction: str = "Horizontal"
    default_annotation_color: str = ""
    answer_min_value: int | None = None
    answer_max_value: int | None = None
    answer_step_size: float | None = None
    answer_min_length: int | None = None
    answer_max_length: int | None = None
    answer_match_pattern: str = ""
    empty_answer_confirmation: bool = False
    empty_answer_confirmation_label: str = ""
    overlay_segments: list[Any] | None = None


@dataclass
class ReaderStudy:
    pk: str
    slug: str
    title: str
    description: str = ""
    editor_pks: set[int] = field(default_factory=set)
    reader_pks: set[int] = field(default_factory=set)
    question_pks: list[str] = field(default_factory=list)
    help_text: str = ""
    end_of_study_text: str = ""
    is_educational: bool = False
    instant_verification: bool = False
    allow_answer_modification: bool = False
    enable_autosaving: bool = False
    allow_case_navigation: bool = False
    allow_show_all_annotations: bool = False
    roll_over_answers_for_n_cases: int = 0
    view_content: dict[str, Any] = field(default_factory=dict)

    def can_view(self, user: User | None) -> bool:
        return user is not None and (user.pk in self.editor_pks or user.pk in self.reader_pks)

    def can_change(self, user: User | None) -> bool:
        return user is not None and user.pk in self.editor_pks


@dataclass
class SocketValue:
    """One value of a display set: exactly one of ``value``, ``image_pk`` or ``file_key`` is meaningful."""

    pk: int
    socket_slug: str
    value: Any = None
    image_pk: str | None = None
    file_key: str | None = None  # in the images bucket: components/componentinterfacevalue/<aa>/<bb>/<pk>/<name>


@dataclass
class DisplaySet:
    pk: str
    reader_study_pk: str
    title: str
    order: int
    created: datetime
    values: dict[str, SocketValue] = field(default_factory=dict)


@dataclass
class Archive:
    """An archive and its three groups (docs/gc-api.md §12): all view it and its items; editors and uploaders have
    ``upload_archive`` and change its items."""

    pk: str
    slug: str
    title: str
    description: str = ""
    editor_pks: set[int] = field(default_factory=set)
    uploader_pks: set[int] = field(default_factory=set)
    user_pks: set[int] = field(default_factory=set)
    view_content: dict[str, Any] = field(default_factory=dict)

    def can_view(self, user: User | None) -> bool:
        return user is not None and user.pk in self.editor_pks | self.uploader_pks | self.user_pks

    def can_upload(self, user: User | None) -> bool:
        """``upload_archive`` on the archive, which is also ``change_archiveitem`` on each of its items."""
        return user is not None and user.pk in self.editor_pks | self.uploader_pks


@dataclass
class ArchiveItem:
    """An archive's case: a socket-value set like a display set, with a title and no order (docs/gc-api.md §12)."""

    pk: str
    archive_pk: str
    title: str
    created: datetime
    values: dict[str, SocketValue] = field(default_factory=dict)


# What a socket value can belong to: the server's CIVForObjectMixin models share one value-handling code path.
ValueSet = DisplaySet | ArchiveItem


@dataclass
class Answer:
    pk: str
    creator: User
    question_pk: str
    display_set_pk: str | None
    answer: Any
    created: datetime
    modified: datetime
    is_ground_truth: bool = False
    answer_image_pk: str | None = None
    last_edit_duration: str | None = None
    total_edit_duration: str | None = None
    score: float | None = None


@dataclass
class Notification:
    """A message the server leaves for a user where no other API shows it (a JSON file value it refused, §10)."""

    pk: str
    user_pk: int
    created: datetime
    message: str
    read: bool = False


class Store:
    """All emulator state. Handlers mutate it directly: aiohttp runs them on one event loop, so no locking is needed."""

    def __init__(self) -> None:
        self.users_by_token: dict[str, User] = {}
        self.sockets: dict[str, Socket] = {}
        self.uploads: dict[str, Upload] = {}
        self.upload_sessions: dict[str, UploadSession] = {}
        self.images: dict[str, Image] = {}
        self.reader_studies: dict[str, ReaderStudy] = {}
        self.questions: dict[str, Question] = {}
        self.display_sets: dict[str, DisplaySet] = {}
        self.answers: dict[str, Answer] = {}
        self.notifications: dict[str, Notification] = {}
        self.archives: dict[str, Archive] = {}
        self.archive_items: dict[str, ArchiveItem] = {}
        self._next_int_pk = 1  # a plain int, not itertools.count: the state is pickled in persistence mode

    def next_int_pk(self) -> int:
        value = self._next_int_pk
        self._next_int_pk += 1
        return value

    def user_by_username(self, username: str) -> User | None:
        return next((u for u in self.users_by_token.values() if u.username == username), None)

    def socket_by_pk(self, pk: int) -> Socket | None:
        return next((s for s in self.sockets.values() if s.pk == pk), None)

    def reader_study_by_slug(self, slug: str) -> ReaderStudy | None:
        return next((rs for rs in self.reader_studies.values() if rs.slug == slug), None)

    def archive_by_slug(self, slug: str) -> Archive | None:
        return next((archive for archive in self.archives.values() if archive.slug == slug), None)

    def value_set(self, pk: str) -> ValueSet | None:
        """The display set or archive item with this pk (both are UUIDs, so they never collide)."""
        return self.display_sets.get(pk) or self.archive_items.get(pk)

    def value_sets(self) -> list[ValueSet]:
        return [*self.display_sets.values(), *self.archive_items.values()]
