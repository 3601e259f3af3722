"""The request bodies of the upload endpoints, validated the way Django REST Framework's fields do (docs/gc-api.md §1).

The messages are DRF's own, so a client sees the same 400 bodies as from the server: ``filename`` (a CharField of at
most 128 characters that must be a bare name), ``part_numbers`` (a ListField of IntegerFields 1…10 000) and
``parts`` (PartSerializer(many=True) under a *partial* update, so no field of a part is required).
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Any

from gcbulk.emulator.http import bad_request
from gcbulk.emulator.objects import MAX_PART_NUMBER, MIN_PART_NUMBER

MAX_FILENAME_LENGTH = 128
# DRF strips a zero fraction before int(): "3.0" and 3.0 are 3, 3.5 is no integer.
_DECIMAL_ZEROS = re.compile(r"\.0*\s*$")


def validate_filename(data: dict[str, Any]) -> str:
    if "filename" not in data:
        raise bad_request({"filename": ["This field is required."]})
    value = data["filename"]
    if value is None:
        raise bad_request({"filename": ["This field may not be null."]})
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise bad_request({"filename": ["Not a valid string."]})
    value = str(value).strip()  # DRF's CharField trims whitespace
    if not value:
        raise bad_request({"filename": ["This field may not be blank."]})
    if len(value) > MAX_FILENAME_LENGTH:
        raise bad_request({"filename": [f"Ensure this field has no more than {MAX_FILENAME_LENGTH} characters."]})
    if value != Path(value).name:
        raise bad_request({"filename": [f"{value} is not a valid filename"]})
    return value


def _drf_integer(value: Any, minimum: int, maximum: int) -> int:
    """DRF's IntegerField: accepts ints and integral strings ("3", "3.0"); raises ValueError with its message."""
    if isinstance(value, bool) or value is None or isinstance(value, (list, dict)):
        raise ValueError("A valid integer is required.")
    text = _DECIMAL_ZEROS.sub("", str(value))
    try:
        number = int(text)
    except ValueError:
        raise ValueError("A valid integer is required.") from None
    if number < minimum:
        raise ValueError(f"Ensure this value is greater than or equal to {minimum}.")
    if number > maximum:
        raise ValueError(f"Ensure this value is less than or equal to {maximum}.")
    return number


def validate_part_numbers(data: dict[str, Any]) -> list[int]:
    if "part_numbers" not in data:
        # A partial update skips "required"; the serializer's validate() asks for the key itself.
        raise bad_request({"non_field_errors": ["The `part_numbers` field is required"]})
    value = data["part_numbers"]
    if value is None:
        raise bad_request({"part_numbers": ["This field may not be null."]})
    if not isinstance(value, list):
        raise bad_request({"part_numbers": [f'Expected a list of items but got type "{type(value).__name__}".']})
    numbers, errors = [], {}
    for index, item in enumerate(value):
        try:
            numbers.append(_drf_integer(item, MIN_PART_NUMBER, MAX_PART_NUMBER))
        except ValueError as error:
            errors[str(index)] = [str(error)]
    if errors:
        raise bad_request({"part_numbers": errors})
    return numbers


def _validate_part(item: Any) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """One entry of ``parts``: PartSerializer with partial=True, so no field is required (docs/gc-api.md §1)."""
    if not isinstance(item, dict):
        return {}, {"non_field_errors": [f"Invalid data. Expected a dictionary, but got {type(item).__name__}."]}
    valid: dict[str, Any] = {}
    errors: dict[str, list[str]] = {}
    if "ETag" in item:
        etag = item["ETag"]
        if etag is None:
            errors["ETag"] = ["This field may not be null."]
        elif isinstance(etag, bool) or not isinstance(etag, (str, int, float)):
            errors["ETag"] = ["Not a valid string."]
        elif not str(etag).strip():
            errors["ETag"] = ["This field may not be blank."]
        else:
            valid["ETag"] = str(etag).strip()
    for name, minimum, maximum in (("PartNumber", MIN_PART_NUMBER, MAX_PART_NUMBER), ("Size", 0, 2**63)):
        if name in item:
            try:
                valid[name] = _drf_integer(item[name], minimum, maximum)
            except ValueError as error:
                errors[name] = [str(error)]
    if "LastModified" in item:
        try:
            valid["LastModified"] = datetime.fromisoformat(str(item["LastModified"]).replace("Z", "+00:00"))
        except ValueError:
            errors["LastModified"] = [
                "Datetime has wrong format. Use one of these formats instead: "
                "YYYY-MM-DDThh:mm[:ss[.uuuuuu]][+HH:MM|-HH:MM|Z]."
            ]
    return valid, errors


def validate_parts(data: dict[str, Any]) -> list[dict[str, Any]]:
    if "parts" not in data:
        raise bad_request({"non_field_errors": ["The `parts` field is required"]})
    value = data["parts"]
    if value is None:
        raise bad_request({"parts": ["This field may not be null."]})
    if not isinstance(value, list):
        raise bad_request(
            {"parts": {"non_field_errors": [f'Expected a list of items but got type "{type(value).__name__}".']}}
        )
    results = [_validate_part(item) for item in value]
    if any(errors for _, errors in results):
        raise bad_request({"parts": [errors for _, errors in results]})
    return [valid for valid, _ in results]
