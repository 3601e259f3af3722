"""The progress display on a terminal: a rich progress bar for bytes and cases, with log lines scrolling above it.

Only used when stdout is a terminal (``gcbulk.engine.service.logs.configure`` with format ``auto``); a container or a pipe gets JSON
lines instead. It is fed the same numbers as the summary line (``gcbulk.engine.service.logs.summary_fields``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import IO, Any

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
)

from gcbulk.engine.service.log_format import TextFormatter
from gcbulk.engine.upload.progress import MIB, format_duration

# ISO 8601, as every other timestamp gcbulk writes (rich's default is the locale's, e.g. 12/07/26 in the US).
LOG_TIME_FORMAT = "[%Y-%m-%dT%H:%M:%S]"


class ProgressDisplay:
    def __init__(self, stream: IO[str]) -> None:
        self.console = Console(file=stream)
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            DownloadColumn(binary_units=True),
            # Speed and ETA from the summary's numbers, not rich's own columns: those speak MB/s beside our MiB and
            # guess a remaining time ("-:--:--") whether or not anything moves.
            TextColumn("{task.fields[speed]}"),
            TextColumn("{task.fields[eta]}"),
            TextColumn("{task.fields[cases]}"),
            console=self.console,
            transient=False,
        )
        self._task = self._progress.add_task("uploading", total=None, cases="", speed="", eta="")
        self._started = False

    def log_handler(self) -> logging.Handler:

        # The same console as the bar, so log lines print above it instead of tearing it.
        handler = RichHandler(
            console=self.console,
            show_path=False,
            rich_tracebacks=False,
            markup=False,
            log_time_format=LOG_TIME_FORMAT,
        )
        handler.setFormatter(TextFormatter(head=False))
        return handler

    def update(self, fields: Mapping[str, Any]) -> None:
        """``fields`` as :func:`gcbulk.engine.service.logs.summary_fields` returns them."""
        if not self._started:
            self._progress.start()
            self._started = True
        cases = fields.get("cases", {})
        text = " · ".join(f"{state} {count}" for state, count in cases.items())
        eta = fields.get("eta_seconds")
        self._progress.update(
            self._task,
            completed=fields.get("bytes", 0),
            total=fields.get("bytes_total") or None,
            speed=f"{(fields.get('rate') or 0.0) / MIB:.1f} MiB/s",
            eta=f"ETA {format_duration(eta)}" if eta is not None else "sent" if _all_sent(fields) else "stopped",
            cases=f"cases {text}" if text else "",
        )

    def stop(self) -> None:
        if self._started:
            self._progress.stop()
            self._started = False


def _all_sent(fields: Mapping[str, Any]) -> bool:
    total = fields.get("bytes_total") or 0
    return total > 0 and (fields.get("bytes") or 0) >= total
