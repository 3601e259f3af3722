"""A certificate that does not verify is a configuration error: exit 2 with a hint naming ca_file (issue 14)."""

from __future__ import annotations

import ssl
from pathlib import Path

from gcbulk.emulator.server import RunningEmulator
from gcbulk.engine.gc.errors import TlsVerificationFailed
from gcbulk.engine.service.follow import is_fatal
from tests.engine.conftest import make_tutorial_tree, write_job
from tests.engine.test_run_command import gcbulk


def test_a_run_against_a_server_whose_certificate_does_not_verify_exits_2_naming_ca_file(
    tmp_path: Path, threaded_emulator: RunningEmulator
) -> None:
    make_tutorial_tree(tmp_path / "cases", 1)
    job = write_job(tmp_path, threaded_emulator)
    job.write_text("\n".join(line for line in job.read_text().splitlines() if not line.startswith("ca_file")))
    result = gcbulk("run", str(job), token=threaded_emulator.tokens["editor"])
    assert result.returncode == 2, result.stderr
    assert "ca_file" in result.stderr and "GCBULK_CA_FILE" in result.stderr
    assert "Traceback" not in result.stderr


def test_follow_mode_stops_on_a_certificate_error_instead_of_retrying_it() -> None:
    # Follow mode exits 2 on what is_fatal accepts and retries the rest forever (engine/service/follow.py).
    assert is_fatal(TlsVerificationFailed("GET", "https://gc.example/api/v1/", ssl.SSLCertVerificationError("x")))
