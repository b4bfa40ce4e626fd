"""Real service processes for end-to-end and fault tests: gunicorn web, Celery worker and beat."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from server.settings import Settings
from tests.support.services import free_port


def service_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment a real process reads its Settings from, mirroring ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "REDIS_"))}
    for name, value in settings.model_dump().items():
        if value is not None:
            env[name.upper()] = str(value)
    env["DATABASE_URL"] = settings.effective_database_url
    env["LOG_FORMAT"] = "json"
    # Test workers leave the metrics port alone (several run at once, and a developer's own worker may hold
    # the default); a test that scrapes a worker passes a free port.
    env["WORKER_METRICS_PORT"] = "0"
    env.update(extra)
    return env


@dataclass
class ServiceProcess:
    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    cwd: Path | None = None
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> ServiceProcess:
        with self.log_path.open("ab") as log:  # the child keeps its own copy of the descriptor
            self.process = subprocess.Popen(
                self.argv, env=self.env, cwd=self.cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill_hard(self) -> None:
        """kill -9 the whole process group (a worker and its pool children), as a crash would."""
        if self.alive():
            os.killpg(self.pid, signal.SIGKILL)
            assert self.process is not None
            self.process.wait(10)

    def stop(self, timeout: float = 20) -> None:
        if self.ask_to_stop():
            self.wait_stopped(timeout)

    def ask_to_stop(self) -> bool:
        """SIGTERM to the group; False when the process had already ended (nothing to wait for)."""
        if not self.alive():
            return False
        with contextlib.suppress(ProcessLookupError):  # it may exit between the check and the signal
            os.killpg(self.pid, signal.SIGTERM)
        return True

    def wait_stopped(self, timeout: float) -> None:
        """Wait for the stop asked for; then kill what is left of the group (e.g. pool processes)."""
        assert self.process is not None
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(max(timeout, 0))
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        self.process.wait(10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@dataclass
class Stack:
    """Processes started by a test, stopped (and their logs kept) at the end."""

    settings: Settings
    log_dir: Path
    processes: list[ServiceProcess] = field(default_factory=list)

    def _start(self, name: str, args: list[str], **env: str) -> ServiceProcess:
        argv = [sys.executable, "-m", "server", *args]
        proc = ServiceProcess(name, argv, service_env(self.settings, **env), self.log_dir / f"{name}.log").start()
        self.processes.append(proc)
        return proc

    def web(self, port: int | None = None) -> tuple[ServiceProcess, str]:
        proc, base = start_web(service_env(self.settings), self.log_dir / "web.log", port=port)
        self.processes.append(proc)
        return proc, base

    def worker(
        self,
        name: str = "worker",
        hostname: str | None = None,
        concurrency: int = 1,
        queues: str | None = None,
        **env: str,
    ) -> ServiceProcess:
        args = ["worker", "--concurrency", str(concurrency)]
        if hostname:
            args += ["--hostname", hostname]
        if queues:
            args += ["--queues", queues]
        return self._start(name, args, **env)

    def beat(self) -> ServiceProcess:
        return self._start("beat", ["beat"])

    def stop_all(self, timeout: float = 20) -> None:
        """All at once (each takes seconds to shut down warmly), newest first."""
        stopping = [proc for proc in reversed(self.processes) if proc.ask_to_stop()]
        deadline = time.monotonic() + timeout
        try:
            for proc in stopping:
                proc.wait_stopped(deadline - time.monotonic())
        finally:  # an error (or Ctrl-C) while waiting on one must not leave the others running
            for proc in stopping:
                proc.kill_hard()

    def logs(self, tail: int | None = 4000) -> str:
        """Every process's log, each cut to its last ``tail`` characters (None: whole)."""
        return "\n".join(f"--- {p.name} ---\n{p.log()[-tail if tail else 0 :]}" for p in self.processes)


def start_web(
    env: dict[str, str], log_path: Path, workers: int = 1, port: int | None = None
) -> tuple[ServiceProcess, str]:
    """`moderation web` on 127.0.0.1 with exactly ``env``, answering /healthz (stopped if it never does)."""
    port = port or free_port()
    argv = [sys.executable, "-m", "server", "web", "--host", "127.0.0.1", "--port", str(port)]
    proc = ServiceProcess("web", [*argv, "--workers", str(workers)], env, log_path).start()
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: answers(f"{base}/healthz"), timeout=30, what="web server", proc=proc)
    except BaseException:
        proc.stop()
        raise
    return proc, base


def answers(url: str) -> bool:
    """Whether ``url`` answers 200 now."""
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def wait_until(
    condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.2, proc: ServiceProcess | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc is not None and not proc.alive():
            raise AssertionError(f"{proc.name} exited while waiting for {what}:\n{proc.log()[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)
