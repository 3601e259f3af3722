"""The Grand Challenge server's limits (docs/gc-api.md §1, §2), in one place. S3's part rules are in ``gcbulk.engine.plan.parts``."""

from __future__ import annotations

GiB = 1024**3

VERIFIED_QUOTA = 128 * GiB  # docs/gc-api.md §1: bytes of completed, unconsumed uploads per verified user
UNVERIFIED_QUOTA = 2 * GiB
UPLOAD_CAP = 2000  # docs/gc-api.md §1: a user's 2001st upload is refused
# Below the cap, with room for the user's other tools (a browser upload, gcapi) while a run is going.
DEFAULT_LIVE_UPLOAD_CEILING = 1800
MAX_ACTIVE_IMPORTS = 16  # docs/gc-api.md §2: a new upload session is refused while 16 imports are active for the user
MAX_FILES_PER_IMAGE = 100  # docs/gc-api.md §2: at most 100 uploads per upload session
MAX_FILENAME = 128  # docs/gc-api.md §1: filename at most 128 characters, a bare name
MAX_TITLE = 255  # the display set's title column
