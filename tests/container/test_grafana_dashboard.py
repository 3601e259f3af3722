"""The Grafana dashboard (docker/grafana/) and the compose "monitoring" profile: every query uses only metrics that
gcbulk's /metrics actually exports, and Prometheus and Grafana are wired to each other and to gcbulk."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import SimpleNamespace

import aiohttp
import anyio
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from gcbulk.engine import settings
from gcbulk.engine.gc.pacer import AdaptiveLimiter, AimdPolicy
from gcbulk.engine.jobfile import load_job
from gcbulk.engine.service.health import MonitoringServer, ServerCheck
from gcbulk.engine.service.metrics import Metrics, RunState
from gcbulk.engine.settings import Address
from gcbulk.engine.upload.journal import LedgerRunner
from tests.container.conftest import REPO, compose, compose_environment
from tests.container.migration_history import write_history

DASHBOARD = REPO / "docker" / "grafana" / "dashboards" / "gcbulk.json"
PROVISIONING = REPO / "docker" / "grafana" / "provisioning"
PROMETHEUS = REPO / "docker" / "prometheus" / "prometheus.yml"
# PromQL words that are not metric names: aggregations, functions (followed by "(") and modifiers.
_PROMQL_WORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "offset",
    "bool",
}


def queries() -> Iterator[tuple[str, str]]:
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel["targets"]:
            yield panel["title"], target["expr"]


def metric_names(expr: str) -> set[str]:
    """The series names a PromQL expression selects: strings, label matchers, groupings, ranges, numbers and
    function calls taken out, what is left are metric names."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        rest = text[match.end() :].lstrip()
        if rest.startswith("(") or match.group() in _PROMQL_WORDS:
            continue
        names.add(match.group())
    return names


@pytest.fixture
async def exported(tmp_path: Path) -> AsyncIterator[set[str]]:
    """Every sample name a scrape of a run's /metrics shows, with a pass running (stats, limiters) and one request
    measured through the run's aiohttp trace hooks."""
    history = write_history(tmp_path / "job", cut_short=False)
    async with LedgerRunner(history.ledger, load_job(history.job_file).binding) as runner:
        state = RunState(runner=runner, reader_study="example-study", base_url="http://127.0.0.1:1/api/v1/")
        state.stats = state.new_stats()
        limits = SimpleNamespace(borrowed_tokens=0)
        state.engine = SimpleNamespace(  # the holders the collector reads; the limiters in them are real ones
            client=SimpleNamespace(api_limiter=AdaptiveLimiter(AimdPolicy())),
            context=SimpleNamespace(
                files_limiter=limits, parts_limiter=limits, import_pacer=AdaptiveLimiter(AimdPolicy())
            ),
        )
        state.count_retry_reason("throttled")
        metrics = Metrics(state)
        server = MonitoringServer(metrics, state, Address("127.0.0.1", 0), ServerCheck(None))
        address = await server.start()
        try:
            url = f"http://127.0.0.1:{address.port}"
            with anyio.fail_after(30):
                async with aiohttp.ClientSession(trace_configs=[metrics.trace_config()]) as session:
                    async with session.get(url + "/healthz") as response:  # measured: the latency histogram
                        await response.read()
                    async with session.get(url + "/metrics") as response:
                        text = await response.text()
        finally:
            await server.stop()
    yield {sample.name for family in text_string_to_metric_families(text) for sample in family.samples} | {
        family.name for family in text_string_to_metric_families(text)
    }


async def test_every_dashboard_query_uses_only_metrics_gcbulk_exports(exported: set[str]) -> None:
    checked = 0
    for title, expr in queries():
        names = metric_names(expr)
        assert names, f"panel {title!r}: no metric in {expr!r}"
        assert names <= exported, f"panel {title!r} asks for {sorted(names - exported)}, which /metrics never shows"
        checked += len(names)
    assert checked >= 20


def test_the_metric_name_reader_finds_names_and_skips_labels_functions_and_ranges() -> None:
    expr = 'histogram_quantile(0.95, sum by (le, endpoint) (rate(x_bucket{target="api"}[5m]))) / max(y) > 0'
    assert metric_names(expr) == {"x_bucket", "y"}


def test_every_panel_draws_from_the_provisioned_prometheus() -> None:
    datasources = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())["datasources"]
    (prometheus,) = datasources
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["panels"]
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == prometheus["uid"], panel["title"]
        assert all(target["datasource"]["uid"] == prometheus["uid"] for target in panel["targets"])
    assert prometheus["url"] == "http://prometheus:9090"


def test_the_monitoring_profile_scrapes_gcbulk_where_it_serves_metrics_and_provisions_the_dashboard() -> None:
    services = compose()["services"]
    assert services["prometheus"]["profiles"] == services["grafana"]["profiles"] == ["monitoring"]
    port = settings.parse_address(compose_environment("gcbulk")["GCBULK_METRICS_ADDRESS"]).port
    worker_port = settings.parse_address(compose_environment("gcbulk-worker")["GCBULK_METRICS_ADDRESS"]).port
    scrape = {job["job_name"]: job for job in yaml.safe_load(PROMETHEUS.read_text())["scrape_configs"]}
    assert scrape["gcbulk"]["static_configs"][0]["targets"] == [f"gcbulk:{port}"]
    assert scrape["gcbulk-worker"]["dns_sd_configs"][0] == {
        "names": ["gcbulk-worker"],
        "type": "A",
        "port": worker_port,
        "refresh_interval": "30s",
    }
    mounts = dict(volume.rsplit(":", 1)[0].split(":", 1) for volume in services["grafana"]["volumes"])
    assert DASHBOARD.parent == REPO / "docker" / "grafana" / "dashboards"
    provider = yaml.safe_load((PROVISIONING / "dashboards" / "gcbulk.yml").read_text())["providers"][0]
    assert provider["options"]["path"] == mounts["./docker/grafana/dashboards"]
    assert mounts["./docker/grafana/provisioning"] == "/etc/grafana/provisioning"
    home = services["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{provider['options']['path']}/{DASHBOARD.name}"
    assert all(port.startswith("127.0.0.1:") for name in ("prometheus", "grafana") for port in services[name]["ports"])
