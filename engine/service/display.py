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
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from gcbulk.engine.service.log_format import TextFormatter


class ProgressDisplay:
    def __init__(self, stream: IO[str]) -> None:
        self.console = Console(file=stream)
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            DownloadColumn(binary_units=True),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[cases]}"),
            console=self.console,
            transient=False,
        )
        self._task = self._progress.add_task("uploading", total=None, cases="")
        self._started = False

    def log_handler(self) -> logging.Handler:

        # The same console as the bar, so log lines print above it instead of tearing it.
        handler = RichHandler(console=self.console, show_path=False, rich_tracebacks=False, markup=False)
        handler.setFormatter(TextFormatter(head=False))
        return handler

    def update(self, fields: Mapping[str, Any]) -> None:
        """``fields`` as :func:`gcbulk.engine.service.logs.summary_fields` returns them."""
        if not self._started:
            self._progress.start()
            self._started = True
        cases = fields.get("cases", {})
        text = " · ".join(f"{state} {count}" for state, count in cases.items())
        self._progress.update(
            self._task,
            completed=fields.get("bytes", 0),
            total=fields.get("bytes_total") or None,
            cases=f"cases {text}" if text else "",
        )

    def stop(self) -> None:
        if self._started:
            self._progress.stop()
            self._started = False
