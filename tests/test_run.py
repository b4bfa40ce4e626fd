"""`moderation run` (what `make run` starts): everything up on embedded defaults, and all of it gone after."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import click
import httpx
import psutil
import pytest

from models.db import create_db_engine, make_session_factory
from models.entities import ModelVersion
from models.migrate import upgrade_database
from moderation import registry
from moderation.features import FEATURES_VERSION
from server.runner import Supervisor, VarDirInUseError, VarDirLock, ensure_model, why_train
from server.settings import Settings
from tests.conftest import TrainedModel
from tests.support.processes import wait_until
from tests.support.services import free_port

pytestmark = pytest.mark.slow


def seed_model(var_dir: Path, trained_model: TrainedModel) -> None:
    """Register the session's model so the run does not spend a minute training its own."""
    url = f"sqlite:///{var_dir / 'moderation.db'}"
    upgrade_database(url)
    engine = create_db_engine(url)
    with make_session_factory(engine).begin() as session:
        registry.register(session, trained_model.version, trained_model.artifact, trained_model.model.card)
        registry.activate(session, trained_model.version)
    engine.dispose()


class Terminal:
    """A pseudo-terminal: ``end`` is the run's stdout and stderr, this side reads what it says."""

    def __init__(self) -> None:
        self._reader, self.end = os.openpty()
        os.set_blocking(self._reader, False)
        self._seen = bytearray()
        self._open = True

    def text(self) -> str:
        with contextlib.suppress(OSError):  # nothing waiting (EAGAIN), or the other end closed (EIO)
            while self._open and (chunk := os.read(self._reader, 65536)):
                self._seen += chunk
        return self._seen.decode(errors="replace")

    def close(self) -> None:
        if self._open:
            self._open = False
            os.close(self._reader)


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_run_serves_on_embedded_defaults_and_stops_everything(
    tmp_path: Path, trained_model: TrainedModel, stop_signal: signal.Signals
) -> None:
    """Stopped by a service manager (SIGTERM) or by its terminal closing (SIGHUP), nothing is left running;
    while it runs, a second run on the same VAR_DIR (on other ports) is refused and says who holds it."""
    var_dir = tmp_path / "var"
    var_dir.mkdir()
    seed_model(var_dir, trained_model)
    port, example_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "REDIS_", "PROMETHEUS_"))}
    env.update(VAR_DIR=str(var_dir), PORT=str(port), EXAMPLE_PORT=str(example_port), LOG_FORMAT="text")
    terminal = Terminal()  # as `make run` in a window has
    run = subprocess.Popen([sys.executable, "-m", "server", "run"], env=env, stdout=terminal.end, stderr=terminal.end)
    os.close(terminal.end)
    base = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        terminal.text()  # read as it comes, as a terminal would
        try:
            return httpx.get(f"{base}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(lambda: "Ctrl-C" in terminal.text(), timeout=120, what="`moderation run`'s banner")
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass  # the address printed takes connections by the time it is read
        banner = terminal.text()
        assert f"http://127.0.0.1:{port}/dashboard/" in banner
        assert "Next: register your site" in banner  # none registered but the example site
        wait_until(ready, timeout=120, what="`moderation run` to be ready")
        started = psutil.Process(run.pid).children(recursive=True)
        names = " ".join(" ".join(p.cmdline()) for p in started)
        assert "redis-server" in names and " worker" in names and " beat" in names and " web" in names
        assert (var_dir / "moderation.db").exists()  # SQLite in VAR_DIR, no DATABASE_URL needed

        second = subprocess.run(
            [sys.executable, "-m", "server", "run"],
            env=env | {"PORT": str(free_port()), "EXAMPLE_PORT": str(free_port())},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 2
        assert f"{var_dir} is in use by another `moderation run`" in second.stderr
        assert str(run.pid) in second.stderr.split("processes", 1)[1]
    finally:
        if stop_signal == signal.SIGHUP:
            terminal.close()  # the window is gone: every write to it fails from now on
        run.send_signal(stop_signal)
        code = run.wait(60)
    said = terminal.text()
    terminal.close()
    assert code == 0, said[-3000:]
    still_running = [p for p in started if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert still_running == [], [" ".join(p.cmdline()) for p in still_running]
    if stop_signal != signal.SIGHUP:
        assert "Stopped." in said


def test_what_is_left_of_a_run_killed_outright_keeps_its_var_dir(tmp_path: Path) -> None:
    """The supervisor's children hold the VAR_DIR lock too: when the supervisor is gone (kill -9), a new run
    is refused, naming the processes still holding it, until they are stopped."""
    lock = VarDirLock.take(tmp_path)
    child = Supervisor(lock=lock).start("sleeper", [sys.executable, "-c", "import time; time.sleep(60)"], {}, None)
    lock.release()  # as when the supervisor dies: only the child's copy of the lock is left
    try:
        with pytest.raises(VarDirInUseError, match=rf"\(processes {child.process.pid}\)"):
            VarDirLock.take(tmp_path)  # not this test's own pid, listed first: it let go of the lock
    finally:
        child.process.kill()
        child.process.wait()
    VarDirLock.take(tmp_path).release()


def test_the_local_run_trains_when_no_model_or_one_made_for_other_features_is_active() -> None:
    current = ModelVersion(version="v-now", path="m.skops", sha256="0", card={"features_version": FEATURES_VERSION})
    older = ModelVersion(version="v-old", path="m.skops", sha256="0", card={"features_version": "2020-01-01"})
    bare = ModelVersion(version="v-bare", path="m.skops", sha256="0", card={})
    assert why_train(current) is None
    assert why_train(None) == "No model is active yet"
    assert "v-old" in (why_train(older) or "") and "2020-01-01" in (why_train(older) or "")
    assert "unrecorded" in (why_train(bare) or "")


def _registry_of(tmp_path: Path, versions: dict[str, tuple[str, bool, bool]], active: str) -> str:
    """A SQLite registry: version -> (features version, once activated, file present), oldest first."""
    url = f"sqlite:///{tmp_path / 'moderation.db'}"
    upgrade_database(url)
    engine = create_db_engine(url)
    with make_session_factory(engine).begin() as session:
        for version, (features, activated, present) in versions.items():
            artifact = tmp_path / f"{version}.skops"
            artifact.write_bytes(version.encode())
            saved = registry.SavedArtifact(artifact, registry.file_sha256(artifact))
            registry.register(session, version, saved, {"features_version": features})
            if activated:
                registry.activate(session, version)
            if not present:
                artifact.unlink()
        registry.activate(session, active)
    engine.dispose()
    return url


def _active_after_ensure(url: str, tmp_path: Path) -> str:
    ensure_model(Settings(var_dir=tmp_path, database_url=url))
    engine = create_db_engine(url)
    with make_session_factory(engine)() as session:
        active = registry.active_version(session)
    engine.dispose()
    assert active is not None
    return active.version


def _no_training(*_args: object, **_kwargs: object) -> str:
    raise click.ClickException("training failed")


def test_the_local_run_activates_the_newest_chosen_model_made_for_these_features(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = _registry_of(
        tmp_path,
        {
            "v-now-older": (FEATURES_VERSION, True, True),
            "v-now": (FEATURES_VERSION, True, True),
            "v-gone": (FEATURES_VERSION, True, False),  # its file is missing
            "v-unchosen": (FEATURES_VERSION, False, True),  # never activated (a retrain not promoted)
            "v-tampered": (FEATURES_VERSION, True, True),
            "v-old": ("2020-01-01", True, True),
        },
        active="v-old",
    )
    (tmp_path / "v-tampered.skops").write_bytes(b"not the file that was registered")
    monkeypatch.setattr("server.cli.training.train_and_register", _no_training)
    assert _active_after_ensure(url, tmp_path) == "v-now"
    assert "activated v-now" in capsys.readouterr().out


def test_the_local_run_starts_with_the_old_model_when_training_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = _registry_of(tmp_path, {"v-old": ("2020-01-01", True, True)}, active="v-old")
    monkeypatch.setattr("server.cli.training.train_and_register", _no_training)
    assert _active_after_ensure(url, tmp_path) == "v-old"
    assert "Training failed (training failed); starting with model v-old" in capsys.readouterr().out


def test_the_local_run_finds_a_model_moved_into_model_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Files registered elsewhere (another host, a restored backup) are looked for by name in MODEL_DIR."""
    url = _registry_of(
        tmp_path, {"v-now": (FEATURES_VERSION, True, True), "v-old": ("2020-01-01", True, True)}, "v-old"
    )
    model_dir = tmp_path / "mounted-elsewhere"
    model_dir.mkdir()
    (tmp_path / "v-now.skops").rename(model_dir / "v-now.skops")
    monkeypatch.setattr("server.cli.training.train_and_register", _no_training)
    ensure_model(Settings(var_dir=tmp_path, database_url=url, model_dir=model_dir))
    assert "activated v-now" in capsys.readouterr().out
