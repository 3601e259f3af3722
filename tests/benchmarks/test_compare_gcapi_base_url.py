"""``benchmarks/compare_gcapi.py --base-url``: R1-shaped work against any server URL, here the emulator on 127.0.0.1
over TLS with its own CA, as a real deployment would be reached: gcbulk and gcapi each add their own tutorial cases,
and the table's requests per case are the requests the server saw."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from gcbulk.emulator.server import RunningEmulator

REPO = Path(__file__).resolve().parents[2]
CASES = 2


def test_compare_against_a_server_url_runs_both_clients_and_counts_the_requests_the_server_saw(
    threaded_emulator: RunningEmulator, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(threaded_emulator.tokens["editor"] + "\n")
    result = subprocess.run(
        [
            sys.executable,
            "benchmarks/compare_gcapi.py",
            "--base-url",
            threaded_emulator.base_url,
            "--ca-file",
            str(threaded_emulator.ca_file),
            "--token-file",
            str(token_file),
            "--cases",
            str(CASES),
            "--rounds",
            "1",
            "--workdir",
            str(tmp_path / "work"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rounds = dict(re.findall(r"round 1 (gcbulk|gcapi) .* ([\d.]+) req/case", result.stdout))
    assert set(rounds) == {"gcbulk", "gcapi"}, result.stdout
    assert re.search(r"^gcbulk +[\d.]+ s +[\d.]+ +[\d.]+$", result.stdout, re.M), result.stdout
    assert re.search(r"^gcapi +[\d.]+ s +[\d.]+ +[\d.]+$", result.stdout, re.M), result.stdout
    # What the clients counted is what reached the server (no faults here, so no retried request either).
    seen = sum(n for route, n in threaded_emulator.context.counters.requests.items() if " api:" in route)
    assert round(sum(float(per_case) * CASES for per_case in rounds.values())) == seen
    # Each client made its own display sets, with both images in place (titles unique per client and run).
    display_sets = threaded_emulator.context.store.display_sets.values()
    for client in ("gcbulk", "gcapi"):
        own = [ds for ds in display_sets if f"-{client}-0-patient" in ds.title]
        assert len(own) == CASES, [ds.title for ds in display_sets]
        assert all({"ct-image", "airway-segmentation"} <= set(ds.values) for ds in own), client


def compare(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "benchmarks/compare_gcapi.py", "--base-url", "https://127.0.0.1:9/api/v1/", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_server_url_without_a_usable_token_file_is_refused_naming_the_file(tmp_path: Path) -> None:
    assert "--base-url needs --token-file" in compare().stderr
    missing = tmp_path / "no-such-token"
    result = compare("--token-file", str(missing))
    assert result.returncode != 0 and f"--token-file {missing}: cannot read it" in result.stderr
    two_lines = tmp_path / "token"
    two_lines.write_text("abc def\n")
    result = compare("--token-file", str(two_lines))
    assert result.returncode != 0 and "expected one line with the API token, nothing else" in result.stderr
    assert "abc" not in result.stderr  # whatever the file holds is never echoed
