"""The emulator's S3 stand-in at rest: objects and multipart parts on disk, and signed URLs.

Bytes never live in memory whole: parts are streamed to files under ``<data_dir>/multipart/``, completed objects are
concatenated into ``<data_dir>/objects/``. URLs are signed with an HMAC over method, path, expiry and the
signed query parameters, the way an S3 presigned URL binds those; changing any of them, or passing the expiry, gives 403.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import shutil
from pathlib import Path
from urllib.parse import urlencode

from emulator.clock import Clock

UPLOADS_BUCKET = "uploads"
IMAGES_BUCKET = "images"


class SignatureError(Exception):
    """A presigned URL that is expired, tampered with or not signed at all."""


class ObjectStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "objects").mkdir(parents=True, exist_ok=True)
        (root / "multipart").mkdir(parents=True, exist_ok=True)

    def object_path(self, bucket: str, key: str) -> Path:
        path = (self.root / "objects" / bucket / key).resolve()
        if not path.is_relative_to((self.root / "objects").resolve()):
            raise ValueError(f"object key escapes the bucket: {key!r}")
        return path

    def exists(self, bucket: str, key: str) -> bool:
        return self.object_path(bucket, key).is_file()

    def size(self, bucket: str, key: str) -> int:
        return self.object_path(bucket, key).stat().st_size

    def delete(self, bucket: str, key: str) -> None:
        self.object_path(bucket, key).unlink(missing_ok=True)

    def copy(self, src_bucket: str, src_key: str, dst_bucket: str, dst_key: str) -> None:
        destination = self.object_path(dst_bucket, dst_key)
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.object_path(src_bucket, src_key), destination)

    def multipart_dir(self, s3_upload_id: str) -> Path:
        if not s3_upload_id or not s3_upload_id.isalnum():
            raise ValueError(f"not an upload id: {s3_upload_id!r}")
        return self.root / "multipart" / s3_upload_id

    def part_path(self, s3_upload_id: str, part_number: int) -> Path:
        return self.multipart_dir(s3_upload_id) / f"{part_number:05d}"

    def discard_multipart(self, s3_upload_id: str) -> None:
        shutil.rmtree(self.multipart_dir(s3_upload_id), ignore_errors=True)


class UrlSigner:
    def __init__(self, clock: Clock, secret: bytes | None = None) -> None:
        self._clock = clock
        self._secret = secret or secrets.token_bytes(32)

    def _signature(self, method: str, path: str, expires: int, params: dict[str, str]) -> str:
        canonical = "\n".join(
            [method.upper(), path, str(expires), urlencode(sorted(params.items()))]
        ).encode()
        return hmac.new(self._secret, canonical, hashlib.sha256).hexdigest()

    def signed_query(self, method: str, path: str, expires_in: float, params: dict[str, str]) -> str:
        """A query string (without ``?``) granting ``method`` on ``path`` with ``params`` until ``expires_in`` from now."""
        expires = int(self._clock.timestamp() + expires_in)
        signature = self._signature(method, path, expires, params)
        return urlencode({**params, "X-Amz-Expires": str(expires), "X-Amz-Signature": signature})

    def verify(self, method: str, path: str, query: dict[str, str]) -> dict[str, str]:
        """Returns the signed parameters; raises SignatureError when the URL is not valid now."""
        params = dict(query)
        signature = params.pop("X-Amz-Signature", None)
        expires_raw = params.pop("X-Amz-Expires", None)
        if signature is None or expires_raw is None or not expires_raw.isdigit():
            raise SignatureError("Request is missing a valid signature")
        expected = self._signature(method, path, int(expires_raw), params)
        if not hmac.compare_digest(signature, expected):
            raise SignatureError("The request signature we calculated does not match the signature you provided")
        if self._clock.timestamp() > int(expires_raw):
            raise SignatureError("Request has expired")
        return params
