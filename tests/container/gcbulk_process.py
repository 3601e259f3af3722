"""The container's entrypoint command as a subprocess: start it, read its JSON log lines, scrape its endpoints."""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.container.conftest import REPO

STARTUP_SECONDS = 60.0


def poll(condition: Callable[[], Any], *, timeout: float, what: str, interval: float = 0.1) -> Any:
    """Polls ``condition`` until it returns something truthy, or fails naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def http_get(url: str, *, context: ssl.SSLContext | None = None) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10, context=context) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


class GcbulkProcess:
    """``gcbulk <argv>`` with ``env``; stdout JSON lines are collected as they arrive."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gcbulk", *argv],
            env=env,
            cwd=REPO,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.lines: list[dict[str, Any]] = []
        self.raw: list[str] = []
        self.stderr: list[str] = []
        self._threads = [
            threading.Thread(target=self._read, args=(self.process.stdout, True), daemon=True),
            threading.Thread(target=self._read, args=(self.process.stderr, False), daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _read(self, stream: Any, parse: bool) -> None:
        for line in stream:
            if not parse:
                self.stderr.append(line)
                continue
            self.raw.append(line)
            try:
                self.lines.append(json.loads(line))
            except ValueError:
                pass

    def events(self, name: str) -> list[dict[str, Any]]:
        return [line for line in list(self.lines) if line.get("event") == name]

    def wait_for_event(self, name: str, timeout: float = STARTUP_SECONDS) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            if self.process.poll() is not None and not self.events(name):
                raise AssertionError(
                    f"gcbulk exited ({self.process.returncode}) before '{name}':\n"
                    + "".join(self.raw[-30:])
                    + "".join(self.stderr[-30:])
                )
            events = self.events(name)
            return events[-1] if events else None

        return poll(found, timeout=timeout, what=f"the '{name}' log line")

    @property
    def monitoring_url(self) -> str:
        return self.wait_for_event("monitoring_started")["address"]

    def get(self, path: str) -> tuple[int, str]:
        return http_get(self.monitoring_url + path)

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        status, text = self.get("/metrics")
        assert status == 200
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    def cases(self, state: str) -> float:
        return self.metrics().get(("gcbulk_cases", (("state", state),)), 0.0)

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        self.process.send_signal(signum)
        code = self.process.wait(timeout=timeout)
        for thread in self._threads:
            thread.join(timeout=10)
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)


def gcbulk_environment(overrides: dict[str, str]) -> dict[str, str]:
    """The test process's environment without any GCBULK_* of the developer, plus ``overrides``."""
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("GCBULK_") and k not in ("GRAND_CHALLENGE_AUTHORIZATION", "GCBULK_CRASH_AT")
    }
    return {**base, **overrides}
