"""The JSON schema a socket's values must fulfil, as the server checks them (docs/gc-api.md §10, §11: value sockets on
the PATCH, JSON-kind file sockets in the background, where a failure is silent and the value never appears).

The schemas themselves are the project's copy of the server's (``gcbulk/schemas/interface-values.schema.json``, read
through ``gcbulk.value_schemas``), the same files the emulator validates against: so the planner refuses exactly what
the server would refuse, and never a value it would take.
"""

from __future__ import annotations

from typing import Any

from gcbulk.value_schemas import socket_schema


def schema_for(socket: dict[str, Any]) -> dict[str, Any] | None:
    """The schema a socket's values must fulfil: its kind's, and the socket's own ``schema`` when the server shows
    one; None when the kind is not a JSON kind (images, PDFs, …)."""
    own = socket.get("schema")
    return socket_schema(str(socket.get("kind")), own if isinstance(own, dict) else None)
