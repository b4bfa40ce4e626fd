"""The operators' docker-compose stack: its services and commands match the CLI, and Compose accepts it.

There is no Docker engine here; Debian's docker-compose v1 (`apt-get install docker-compose`) validates
the file without one, so that part runs when the binary is installed and is skipped otherwise.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
from datetime import timedelta
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from celery.beat import PersistentScheduler
from sqlalchemy.engine import make_url

from server.cli import main
from server.settings import Settings
from workers.app import RETRAIN_TASK, CeleryOptions, create_celery

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "Dockerfile"

# service -> the `moderation` subcommand it runs
APP_COMMANDS = {"migrate": "migrate", "web": "web", "worker": "worker", "beat": "beat"}
LONG_RUNNING = ("redis", "postgres", "web", "worker", "beat")
REQUIRED_SECRETS = ("POSTGRES_PASSWORD", "SECRET_KEY")
ALL_INTERFACES = "0.0.0.0"  # noqa: S104 - inside a container, the published port arrives on eth0


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(document, dict)
    return document


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found = compose.get("services")
    assert isinstance(found, dict)
    return found


def command_of(service: dict[str, Any]) -> list[str]:
    command = service.get("command")
    if isinstance(command, str):
        return shlex.split(command)
    assert isinstance(command, list), f"no command: {service}"
    return [str(part) for part in command]


def app_services(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The services built from this repository's Dockerfile."""
    return {name: service for name, service in services.items() if "build" in service}


def check_cli_invocation(argv: list[str]) -> None:
    """`argv` is `moderation <subcommand> [options]` and click parses it (without running it)."""
    assert argv[0] == "moderation", f"{argv} does not run the moderation CLI"
    assert len(argv) >= 2, f"{argv} names no subcommand"
    subcommand = main.commands.get(argv[1])
    assert subcommand is not None, f"`moderation {argv[1]}` is not a CLI command; it has {sorted(main.commands)}"
    assert not isinstance(subcommand, click.Group), f"`moderation {argv[1]}` is a group, not a command"
    try:
        subcommand.make_context(argv[1], argv[2:])
    except click.ClickException as error:
        pytest.fail(f"`{shlex.join(argv)}` does not parse: {error.format_message()}")


def healthcheck_test(service: dict[str, Any]) -> list[str] | None:
    check = service.get("healthcheck")
    if not check or check.get("disable"):
        return None
    test = check.get("test")
    if isinstance(test, str):
        return ["CMD-SHELL", test]
    assert isinstance(test, list)
    return None if test == ["NONE"] else [str(part) for part in test]


# --- the file, parsed -------------------------------------------------------------------------------


def test_core_services_exist(services: dict[str, dict[str, Any]]) -> None:
    missing = {"redis", "postgres", *APP_COMMANDS} - set(services)
    assert not missing, f"docker-compose.yml lacks services {sorted(missing)}"


def test_app_services_run_cli_subcommands(services: dict[str, dict[str, Any]]) -> None:
    apps = app_services(services)
    assert set(apps) == set(APP_COMMANDS), f"services built from the Dockerfile: {sorted(apps)}"
    for name, service in apps.items():
        argv = command_of(service)
        check_cli_invocation(argv)
        assert argv[1] == APP_COMMANDS[name], f"service {name} runs `moderation {argv[1]}`"


def test_web_listens_on_the_published_port(services: dict[str, dict[str, Any]]) -> None:
    argv = command_of(services["web"])
    context = main.commands["web"].make_context("web", argv[2:])
    assert context.params["host"] == ALL_INTERFACES
    assert context.params["port"] == 8000
    assert any(str(port).endswith(":8000") for port in services["web"].get("ports", []))


def with_defaults(value: str) -> str:
    """A Compose string as it reads with no variable set: each ${NAME:-default} replaced by its default."""
    return re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*:-([^}]*)\}", r"\1", value)


def test_web_is_published_only_on_the_loopback_address_by_default(services: dict[str, dict[str, Any]]) -> None:
    """Slow clients must meet a buffering proxy before web's threads (docs/operations.md, "Slow clients")."""
    assert [with_defaults(str(port)) for port in services["web"]["ports"]] == ["127.0.0.1:8000:8000"]


def test_dockerfile_default_command_is_a_cli_command() -> None:
    cmd_lines = [line for line in DOCKERFILE.read_text().splitlines() if line.startswith("CMD ")]
    assert len(cmd_lines) == 1, "the Dockerfile needs exactly one CMD"
    argv = json.loads(cmd_lines[0].removeprefix("CMD "))
    check_cli_invocation(argv)
    assert argv[1] == "web"


def test_app_services_share_one_image_and_configuration(services: dict[str, dict[str, Any]]) -> None:
    apps = app_services(services)
    assert len({json.dumps(s["build"], sort_keys=True) for s in apps.values()}) == 1
    assert len({s.get("image") for s in apps.values()}) == 1
    for name, service in apps.items():
        env_file = service.get("env_file")
        assert env_file == ".env" or env_file == [".env"], f"{name} does not read .env"
        environment = service.get("environment")
        assert isinstance(environment, dict), f"{name}: environment must be a mapping"
        assert "@postgres:" in environment["DATABASE_URL"], f"{name} does not use the postgres service"
        assert environment["REDIS_URL"].startswith("redis://redis:"), f"{name} does not use the redis service"
        model_dir = environment["MODEL_DIR"]
        mounts = [str(volume).split(":") for volume in service.get("volumes", [])]
        assert any(len(m) >= 2 and m[1] == model_dir for m in mounts), f"{name} does not mount {model_dir}"


def test_long_running_services_have_health_checks(services: dict[str, dict[str, Any]]) -> None:
    for name in LONG_RUNNING:
        test = healthcheck_test(services[name])
        assert test is not None, f"service {name} has no health check"
        assert test[0] in ("CMD", "CMD-SHELL"), f"service {name}: health check {test}"
    assert "/healthz" in " ".join(healthcheck_test(services["web"]) or [])


def test_worker_health_check_pings_its_own_node(services: dict[str, dict[str, Any]]) -> None:
    """server.worker_ping pings celery@<the container's hostname>, the name the worker takes by default, so every
    replica of `--scale worker=N` checks only itself (tests/test_worker_health.py runs it against a worker)."""
    test = healthcheck_test(services["worker"]) or []
    assert test[:4] == ["CMD", "python", "-m", "server.worker_ping"], f"worker health check: {test}"
    assert importlib.util.find_spec("server.worker_ping") is not None
    assert "--node" not in test, "the worker takes its default name: the check must ping that one"
    assert "--hostname" not in command_of(services["worker"])


def seconds(duration: str) -> float:
    """A Compose duration ("30s", "1m30s", "1h") in seconds."""
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, f"not a duration: {duration!r}"
    unit = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 0.000001}
    return sum(float(number) * unit[name] for number, name in parts)


def test_worker_health_check_has_room_for_a_busy_host(services: dict[str, dict[str, Any]]) -> None:
    """The old check (Celery's command line loading the whole app, then the ping) was measured at 20.7 s on a busy
    host against its 30 s timeout: a timeout counts as a failure, and three restart the container. The ping's own
    wait and the interpreter's start (about a second idle) must fit well inside the timeout, and the first
    checks must not count before the worker, which loads the app, has started."""
    check = services["worker"]["healthcheck"]
    test = healthcheck_test(services["worker"]) or []
    ping_wait = float(test[test.index("--timeout") + 1])
    assert seconds(str(check["timeout"])) >= ping_wait + 15, check
    assert seconds(str(check["interval"])) >= seconds(str(check["timeout"])), "checks must not overlap"
    assert seconds(str(check["start_period"])) >= 60, check


def test_migrations_run_once_before_the_app(services: dict[str, dict[str, Any]]) -> None:
    migrate = services["migrate"]
    assert str(migrate.get("restart", "no")) == "no", "a one-shot job must not be restarted"
    assert healthcheck_test(migrate) is None
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("web", "worker", "beat"):
        depends = services[name]["depends_on"]
        assert isinstance(depends, dict), f"{name}: depends_on needs conditions"
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
        assert depends["redis"]["condition"] == "service_healthy", name
    for backing in ("postgres", "redis"):
        assert services["web"]["depends_on"][backing]["condition"] == "service_healthy"


def test_a_beat_started_without_its_schedule_file_waits_a_whole_interval_before_retraining(tmp_path: Path) -> None:
    """Why beat's schedule file must outlive its container: scheduled retraining is an interval entry whose
    last run lives only there, and a beat without the file starts the interval anew (Celery's semantics)."""
    app = create_celery(CeleryOptions(broker_url="memory://", retrain_interval_hours=24), lambda: None)  # type: ignore[arg-type,return-value]
    scheduler = PersistentScheduler(app=app, schedule_filename=str(tmp_path / "celerybeat-schedule"), lazy=True)
    scheduler.setup_schedule()
    try:
        retrain = next(entry for entry in scheduler.schedule.values() if entry.task == RETRAIN_TASK)
        due, next_in = retrain.is_due()
    finally:
        scheduler.close()
    assert not due and next_in > timedelta(hours=23).total_seconds()


def test_the_beat_keeps_its_schedule_file_on_a_named_volume(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    """The schedule file is VAR_DIR/celerybeat-schedule: on a container's own layer, every recreated beat
    (a new image, a changed setting) forgets when retraining last ran, and with deploys more often than
    RETRAIN_INTERVAL_HOURS scheduled retraining never runs."""
    beat = services["beat"]
    var_dir = beat["environment"]["VAR_DIR"]
    mounts = [str(volume).split(":") for volume in beat.get("volumes", [])]
    assert any(m[0] in (compose.get("volumes") or {}) and m[1] == var_dir for m in mounts), (
        f"beat's VAR_DIR {var_dir} is on no named volume (mounts: {mounts})"
    )


def test_backing_services_persist_data(compose: dict[str, Any], services: dict[str, dict[str, Any]]) -> None:
    volumes = compose.get("volumes") or {}
    for name, path in (("postgres", "/var/lib/postgresql/data"), ("redis", "/data")):
        mounts = [str(v).split(":") for v in services[name].get("volumes", [])]
        assert any(m[0] in volumes and m[1] == path for m in mounts), f"{name} has no named volume at {path}"
    redis_command = command_of(services["redis"])
    assert redis_command[redis_command.index("--appendonly") + 1] == "yes"
    assert redis_command[redis_command.index("--maxmemory-policy") + 1] == "noeviction"


def test_flower_is_optional_and_watches_the_same_redis(services: dict[str, dict[str, Any]]) -> None:
    flower = services["flower"]
    assert flower.get("profiles") == ["monitoring"]
    assert "redis://redis:6379/0" in " ".join(command_of(flower))
    assert services["worker"]["environment"]["REDIS_URL"] == "redis://redis:6379/0"
    assert healthcheck_test(flower) is not None
    for name in LONG_RUNNING:
        assert "profiles" not in services[name], f"{name} must start without a profile"


# --- .env.example -------------------------------------------------------------------------------------


def env_example_lines() -> dict[str, str]:
    """KEY -> value for every `KEY=value` or commented-out `# KEY=value` line."""
    found = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        match = re.fullmatch(r"#?\s*([A-Z][A-Z0-9_]*)=(.*)", line)
        if match:
            found[match.group(1)] = match.group(2)
    return found


def test_env_example_documents_every_setting() -> None:
    documented = env_example_lines()
    missing = [name.upper() for name in Settings.model_fields if name.upper() not in documented]
    assert not missing, f".env.example does not document {missing}"


def test_env_example_documents_every_compose_variable() -> None:
    # ${VAR...} is interpolated by Compose; $${VAR} is left for the container's shell.
    used = set(re.findall(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)", COMPOSE_FILE.read_text()))
    missing = sorted(used - set(env_example_lines()))
    assert not missing, f".env.example does not mention {missing}"


def test_env_example_holds_no_secrets() -> None:
    active = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            active[key.strip()] = value
    for key in REQUIRED_SECRETS:
        assert active.get(key) == "", f"{key} must be present and empty in .env.example"


# --- docker-compose v1 -------------------------------------------------------------------------------

DOCKER_COMPOSE = shutil.which("docker-compose")
needs_compose = pytest.mark.skipif(
    DOCKER_COMPOSE is None,
    reason="the docker-compose binary is not installed (Debian: apt-get install docker-compose)",
)


def stack_copy(tmp_path: Path, secrets: dict[str, str]) -> Path:
    """The compose files in a temporary folder, with .env made from .env.example the way an operator would."""
    for source in (COMPOSE_FILE, DOCKERFILE, ENV_EXAMPLE):
        shutil.copy(source, tmp_path / source.name)
    lines = []
    for line in ENV_EXAMPLE.read_text().splitlines():
        key = line.partition("=")[0]
        lines.append(f"{key}={secrets[key]}" if key in secrets else line)
    (tmp_path / ".env").write_text("\n".join(lines) + "\n")
    return tmp_path


def run_compose(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert DOCKER_COMPOSE is not None
    # A clean environment: the stack's variables must come from .env, not from whoever runs the tests.
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(folder), "LANG": "C.UTF-8"}
    return subprocess.run(
        [DOCKER_COMPOSE, "-f", "docker-compose.yml", *args],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@needs_compose
def test_docker_compose_accepts_the_file(tmp_path: Path) -> None:
    folder = stack_copy(tmp_path, {"POSTGRES_PASSWORD": "pw0123abcd", "SECRET_KEY": "k" * 64})
    result = run_compose(folder, "config")
    assert result.returncode == 0, f"docker-compose config failed:\n{result.stderr}"

    resolved = yaml.safe_load(result.stdout)["services"]
    url = make_url(resolved["web"]["environment"]["DATABASE_URL"])
    assert (url.drivername, url.host, url.password, url.database) == (
        "postgresql+psycopg",
        "postgres",
        "pw0123abcd",
        "moderation",
    )
    assert resolved["postgres"]["environment"]["POSTGRES_PASSWORD"] == "pw0123abcd"
    assert resolved["worker"]["environment"]["SECRET_KEY"] == "k" * 64

    profiles = run_compose(folder, "config", "--profiles")
    assert profiles.returncode == 0, profiles.stderr
    assert "monitoring" in profiles.stdout.split()


@needs_compose
def test_docker_compose_refuses_an_unedited_env_file(tmp_path: Path) -> None:
    folder = stack_copy(tmp_path, {})
    result = run_compose(folder, "config", "--quiet")
    assert result.returncode != 0
    assert "POSTGRES_PASSWORD" in result.stderr or "SECRET_KEY" in result.stderr, result.stderr


def test_worker_metrics_are_reachable_inside_the_compose_network_only(services: dict[str, dict[str, Any]]) -> None:
    """Each worker container has its own metrics folder, which web's /metrics cannot read: Prometheus in the
    compose network scrapes every worker itself."""
    worker = services["worker"]
    params = main.commands["worker"].make_context("worker", command_of(worker)[2:]).params
    assert params["metrics_host"] == ALL_INTERFACES  # the container's own interface, not its loopback
    assert params["metrics_port"] not in (None, 0)
    assert [str(port) for port in worker.get("expose", [])] == [str(params["metrics_port"])]
    assert "ports" not in worker, "worker metrics must not be published on the host"
