"""The Dockerfile and docker-compose.yml, correct by construction (this machine has no Docker engine): every command
they run parses with the real CLI, every variable they set is one gcbulk reads, every path they mount exists or is
made by the image, and the services agree with each other (host names, ports, the CA file's path)."""

from __future__ import annotations

import importlib
import json
import shlex
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import pytest

from gcbulk.emulator.cli import build_parser as emulator_parser
from gcbulk.engine import settings
from gcbulk.engine.cli import build_parser as gcbulk_parser
from gcbulk.engine.jobfile import TOKEN_ENV, load_job
from tests.container.conftest import COMPOSE_FILE, REPO, compose

DOCKERFILE = REPO / "Dockerfile"
SCALE_OUT = {"postgres", "scale-out-cases", "gcbulk-worker"}
MONITORING = {"prometheus", "grafana"}  # profile "monitoring" (tests/container/test_grafana_dashboard.py)
# libpq's own variable: the scale-out workers' database password, kept out of the DSN (so out of every log line).
LIBPQ_VARIABLES = {"PGPASSWORD"}
LOCAL_PG_PASSWORD = "${GCBULK_PG_PASSWORD:-gcbulk-local-demo}"  # the documented local default


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    joined, current = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        if line.strip().startswith("#") or not line.strip():
            continue
        current += line.rstrip("\\").strip() + " "
        if not line.rstrip().endswith("\\"):
            joined.append(current.strip())
            current = ""
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in joined]


def instruction(name: str) -> list[str]:
    return [arguments for key, arguments in dockerfile_instructions() if key == name]


def image_directories() -> set[str]:
    made = set()
    for run in instruction("RUN"):
        words = shlex.split(run.replace("&&", " ; "))
        if "mkdir" in words:
            made.update(word for word in words[words.index("mkdir") + 1 :] if word.startswith("/"))
    return made


def known_variables() -> set[str]:
    engine_keys = {settings.ENV_PREFIX + key.upper() for key in settings.ENGINE_KEYS + settings.JOB_KEYS}
    process = {knob.env for knob in settings.PROCESS_KNOBS}
    return engine_keys | process | {"GCBULK_LEDGER", "GCBULK_EVENTS", settings.TOKEN_FILE_ENV, TOKEN_ENV}


def parse_command(argv: list[str]) -> object:
    program, *arguments = argv
    parser = {"gcbulk": gcbulk_parser, "gcbulk-emulator": emulator_parser}[program]()
    return parser.parse_args(arguments)


def image_command() -> list[str]:
    return json.loads(instruction("ENTRYPOINT")[-1]) + json.loads(instruction("CMD")[-1])


def env_of(service: str) -> dict[str, str]:
    return {str(k): str(v) for k, v in (compose()["services"][service].get("environment") or {}).items()}


def mounts(service: str) -> dict[str, tuple[str, bool]]:
    """target -> (source, read-only)."""
    found = {}
    for volume in compose()["services"][service].get("volumes", []):
        # A source may be "${VARIABLE:-default}", whose ":-" is not a separator.
        end = volume.index("}") + 1 if volume.startswith("${") else volume.index(":")
        source, (target, *options) = volume[:end], volume[end + 1 :].split(":")
        found[target] = (source, "ro" in options)
    return found


# ---- Dockerfile --------------------------------------------------------------------------------------------------


def test_the_image_is_python_311_slim_runs_as_a_non_root_user_and_keeps_state_on_a_volume() -> None:
    # Every stage starts from python:3.11-slim or from an earlier stage (test_build_context.py checks the stages).
    bases = {arguments.split()[0] for arguments in instruction("FROM")}
    assert bases == {"python:3.11-slim", "build", "runtime"}
    assert instruction("USER")[-1] not in ("root", "0")
    assert json.loads(instruction("VOLUME")[-1]) == ["/var/lib/gcbulk"]
    environment = " ".join(instruction("ENV"))
    assert "GCBULK_LEDGER=/var/lib/gcbulk/" in environment and "GCBULK_EVENTS=/var/lib/gcbulk/" in environment
    assert "GCBULK_METRICS_ADDRESS=0.0.0.0:9464" in environment
    assert {"/var/lib/gcbulk", "/var/lib/gcbulk-emulator", "/data/cases", "/etc/gcbulk"} <= image_directories()


def test_the_image_copies_only_what_exists_and_sets_only_variables_gcbulk_reads() -> None:
    for copy in instruction("COPY"):
        if copy.startswith("--from="):  # from an earlier build stage, not from the repository
            continue
        *sources, _ = copy.split()
        for source in sources:
            assert (REPO / source).exists(), f"COPY {source}: not in the repository"
    for env in instruction("ENV"):
        for assignment in shlex.split(env):
            name = assignment.split("=", 1)[0]
            assert not name.startswith("GCBULK_") or name in known_variables(), name
    ignored = (REPO / ".dockerignore").read_text()
    for needed in ("pyproject.toml", "README.md", "constraints.txt", "gcbulk/", "engine/", "state/", "emulator/"):
        assert f"!{needed}" in ignored  # test_build_context.py applies Docker's own rules to them


def test_the_entrypoint_and_default_command_are_gcbulk_run_follow_on_the_mounted_job() -> None:
    argv = image_command()
    assert argv == ["gcbulk", "run", "--follow", "/etc/gcbulk/job.toml"]
    parsed = parse_command(argv)
    assert parsed.follow and parsed.job == Path("/etc/gcbulk/job.toml")


def test_the_healthcheck_probes_healthz_with_a_module_that_exists() -> None:
    healthcheck = instruction("HEALTHCHECK")[-1]
    command = json.loads(healthcheck.split("CMD", 1)[1])
    assert command[:2] == ["python", "-m"]
    module = importlib.import_module(command[2])
    assert module.healthz_url("0.0.0.0:9464") == "http://127.0.0.1:9464/healthz"
    assert module.healthz_url("[::]:9000") == "http://127.0.0.1:9000/healthz"
    assert module.healthz_url("off") is None


# ---- docker-compose.yml -----------------------------------------------------------------------------------------


def test_compose_has_the_demo_services_a_real_profile_and_a_scale_out_profile() -> None:
    services = compose()["services"]
    assert set(services) == {"emulator", "demo-cases", "gcbulk", "gcbulk-real"} | SCALE_OUT | MONITORING
    assert services["gcbulk-real"]["profiles"] == ["real"]
    assert all("profiles" not in services[name] for name in ("emulator", "demo-cases", "gcbulk"))
    assert all(services[name]["profiles"] == ["scale-out"] for name in SCALE_OUT)  # the demo stays as it was
    for name, service in services.items():
        if name == "emulator":  # the image's second target: gcbulk plus the emulator extra
            assert service["image"] == "gcbulk-emulator:latest"
            assert service["build"] == {"context": ".", "target": "emulator"}
        elif name not in ("postgres", *MONITORING):  # the monitoring profile runs Prometheus's and Grafana's images
            assert service["image"] == "gcbulk:latest" and service["build"] == {"context": ".", "target": "gcbulk"}
    assert (REPO / "Dockerfile").is_file()


@pytest.mark.parametrize(
    "service", ["emulator", "demo-cases", "gcbulk", "gcbulk-real", "scale-out-cases", "gcbulk-worker"]
)
def test_every_service_command_parses_with_the_real_cli(service: str) -> None:
    spec = compose()["services"][service]
    entrypoint = spec.get("entrypoint", ["gcbulk"])
    argv = entrypoint + spec["command"] if "command" in spec else image_command()
    parse_command(argv)


@pytest.mark.parametrize("service", ["gcbulk", "gcbulk-real", "gcbulk-worker"])
def test_every_variable_a_service_sets_is_one_gcbulk_reads(service: str) -> None:
    unknown = set(env_of(service)) - known_variables() - LIBPQ_VARIABLES
    assert not unknown


def test_the_demo_services_agree_on_host_port_ca_file_and_case_tree() -> None:
    services = compose()["services"]
    emulator = emulator_parser().parse_args(services["emulator"]["command"])
    gcbulk = env_of("gcbulk")
    base = urlsplit(gcbulk["GCBULK_BASE_URL"])
    assert (base.scheme, base.hostname, base.port) == ("https", emulator.public_host, emulator.port)
    assert emulator.public_host == "emulator" and emulator.host == "0.0.0.0"

    ca_file = PurePosixPath(gcbulk["GCBULK_CA_FILE"])
    assert ca_file == PurePosixPath(emulator.data_dir) / "tls" / "ca.pem"  # where emulator/tls.py writes it
    assert str(ca_file) in " ".join(services["emulator"]["healthcheck"]["test"])
    emulator_volume = mounts("emulator")[str(emulator.data_dir)][0]
    assert mounts("gcbulk")[str(emulator.data_dir)] == (emulator_volume, True)

    cases_volume = mounts("demo-cases")["/data/cases"][0]
    demo = gcbulk_parser().parse_args(services["demo-cases"]["command"])
    assert Path(demo.workdir) / "cases" == Path("/data/cases")
    assert mounts("gcbulk")[gcbulk["GCBULK_CASE_ROOT"]] == (cases_volume, True)  # read-only for gcbulk

    assert services["gcbulk"]["depends_on"] == {
        "emulator": {"condition": "service_healthy"},
        "demo-cases": {"condition": "service_completed_successfully"},
    }
    port = settings.parse_address(gcbulk["GCBULK_METRICS_ADDRESS"]).port
    assert services["gcbulk"]["ports"] == [f"127.0.0.1:{port}:{port}"]


def test_the_emulator_healthcheck_is_valid_python() -> None:
    test = compose()["services"]["emulator"]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"]
    compile(test[3], "healthcheck", "exec")


def test_every_mount_is_a_declared_volume_or_a_file_in_the_repository() -> None:
    document = compose()
    for name in document["services"]:
        for target, (source, _) in mounts(name).items():
            if source.startswith("${"):  # a user-provided path; its default is checked when it is in the repo
                source = source.split(":-", 1)[1].rstrip("}")
                if not source.startswith("./docker/"):
                    continue
            if source.startswith("./"):
                assert (COMPOSE_FILE.parent / source).exists(), f"{name}: {source} does not exist"
            else:
                assert source in document["volumes"], f"{name}: volume {source} is not declared"
            assert target.startswith("/")


def test_the_mounted_job_files_load_and_the_state_lives_on_the_volume() -> None:
    for service in ("gcbulk", "gcbulk-real"):
        job_source = mounts(service)["/etc/gcbulk/job.toml"][0]
        job_source = job_source.split(":-", 1)[1].rstrip("}") if job_source.startswith("${") else job_source
        job = load_job(COMPOSE_FILE.parent / job_source)
        assert str(job.case_root) == "/data/cases"
        environment = env_of(service)
        assert environment["GCBULK_LEDGER"].startswith("/var/lib/gcbulk/")
        assert mounts(service)["/var/lib/gcbulk"][1] is False  # the ledger volume is writable
        assert (
            int(compose()["services"][service]["stop_grace_period"].rstrip("s"))
            > settings.PROCESS_KNOBS[[knob.name for knob in settings.PROCESS_KNOBS].index("drain")].default
        )


def test_the_real_profile_reads_the_token_from_a_compose_secret_by_default() -> None:
    document = compose()
    real = document["services"]["gcbulk-real"]
    assert real["secrets"] == ["gc_token"] and "gc_token" in document["secrets"]
    assert env_of("gcbulk-real")["GCBULK_TOKEN_FILE"] == "${GCBULK_TOKEN_FILE-/run/secrets/gc_token}"
    assert "demo-editor-token" not in json.dumps(real)


# ---- the scale-out profile: a PostgreSQL ledger and a worker service to scale ----------------------------------


def test_postgres_is_the_official_16_image_on_a_named_volume_healthy_by_pg_isready_and_has_no_host_port() -> None:
    document = compose()
    postgres = document["services"]["postgres"]
    assert postgres["image"] == "postgres:16" and "build" not in postgres
    source, read_only = mounts("postgres")["/var/lib/postgresql/data"]
    assert source in document["volumes"] and not read_only
    test = postgres["healthcheck"]["test"]
    environment = env_of("postgres")
    assert test[:2] == ["CMD", "pg_isready"]
    assert test[test.index("--username") + 1] == environment["POSTGRES_USER"]
    assert test[test.index("--dbname") + 1] == environment["POSTGRES_DB"]
    assert "ports" not in postgres
    assert environment["POSTGRES_PASSWORD"] == LOCAL_PG_PASSWORD


def test_the_worker_runs_the_gcbulk_image_as_is_and_scales_without_a_fixed_name_or_host_port() -> None:
    services = compose()["services"]
    worker = services["gcbulk-worker"]
    for pinned in ("container_name", "ports", "hostname", "entrypoint", "command"):
        assert pinned not in worker, pinned  # one per replica would collide; the image's command is the same
    port = settings.parse_address(env_of("gcbulk-worker")["GCBULK_METRICS_ADDRESS"]).port
    assert [str(exposed) for exposed in worker["expose"]] == [str(port)]
    assert worker["depends_on"] == {
        "postgres": {"condition": "service_healthy"},
        "emulator": {"condition": "service_healthy"},
        "scale-out-cases": {"condition": "service_completed_successfully"},
    }
    # The worker's case tree is the one its one-shot service writes, read-only; the CA file is the emulator's.
    cases_volume = mounts("scale-out-cases")["/data/cases"][0]
    assert mounts("gcbulk-worker")[env_of("gcbulk-worker")["GCBULK_CASE_ROOT"]] == (cases_volume, True)
    assert mounts("gcbulk-worker")["/var/lib/gcbulk-emulator"] == mounts("gcbulk")["/var/lib/gcbulk-emulator"]
    assert int(worker["stop_grace_period"].rstrip("s")) > 30


def test_the_workers_ledger_is_the_postgres_service_by_a_dsn_without_a_password() -> None:
    environment, database = env_of("gcbulk-worker"), env_of("postgres")
    dsn = urlsplit(environment["GCBULK_LEDGER"])
    assert dsn.scheme == "postgresql" and (dsn.hostname, dsn.port) == ("postgres", 5432)
    assert (dsn.username, dsn.path) == (database["POSTGRES_USER"], f"/{database['POSTGRES_DB']}")
    assert dsn.password is None and "password" not in dsn.query  # libpq takes it from PGPASSWORD
    assert environment["PGPASSWORD"] == database["POSTGRES_PASSWORD"] == LOCAL_PG_PASSWORD


def test_the_workers_job_resolves_to_the_shared_ledger_and_titles_apart_from_the_demos(tmp_path: Path) -> None:
    job_source = mounts("gcbulk-worker")["/etc/gcbulk/job.toml"][0]
    environment = {name: value for name, value in env_of("gcbulk-worker").items() if name not in LIBPQ_VARIABLES}
    environment["GCBULK_CA_FILE"] = ""  # the emulator's CA exists only in its volume; the rest resolves as in there
    resolved = settings.resolve(COMPOSE_FILE.parent / job_source, None, environment, read_token=False)
    assert resolved.ledger == "postgresql://gcbulk@postgres:5432/gcbulk"
    assert resolved.events == Path("/var/lib/gcbulk/job.events.jsonl")  # the replica's own volume, writable
    demo = load_job(COMPOSE_FILE.parent / mounts("gcbulk")["/etc/gcbulk/job.toml"][0])
    # One study on the emulator: the two demos' display sets must not share titles.
    assert resolved.job.cases.title != demo.cases.title and resolved.job.cases.title.endswith("{folder}")
    assert resolved.job.reader_study == demo.reader_study


def test_no_password_or_token_is_written_in_the_compose_file_beyond_the_documented_local_defaults() -> None:
    text = COMPOSE_FILE.read_text()
    for name in compose()["services"]:
        for variable, value in env_of(name).items():
            if any(word in variable for word in ("PASSWORD", "SECRET", "TOKEN", "AUTHORIZATION")):
                assert value in (
                    LOCAL_PG_PASSWORD,
                    "demo-editor-token",
                    "${GRAND_CHALLENGE_AUTHORIZATION:-}",
                    "${GCBULK_TOKEN_FILE-/run/secrets/gc_token}",
                ), (name, variable)
    assert text.count("gcbulk-local-demo") == 3  # the two defaults and the comment that documents it
    readme = (REPO / "README.md").read_text()
    assert "GCBULK_PG_PASSWORD" in readme and "gcbulk-local-demo" in readme
