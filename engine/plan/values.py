"""JSON values as the ledger keeps them: one canonical text per value, so a re-plan sees an unchanged value as equal."""

from __future__ import annotations

import json
from typing import Any


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
