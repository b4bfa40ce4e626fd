"""The model registry: skops artifacts that load only when intact and trusted, one active version."""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import skops.io as sio
from sklearn.naive_bayes import MultinomialNB
from sklearn.tree import DecisionTreeClassifier
from sqlalchemy import Engine, func, select, text
from sqlalchemy.exc import IntegrityError

from models.db import make_session_factory
from models.entities import ModelVersion
from moderation import registry
from moderation.classifier import LABELS
from moderation.features import FEATURES_VERSION, CommentText
from server.factory import build_celery, build_runtime
from server.settings import Settings
from tests.conftest import TrainedModel
from tests.support.models import saved_elsewhere

COMMENTS = [
    CommentText(body="Thanks, the stretches in this article really helped my lower back."),
    CommentText(body="Cheap pain pills, no prescription!!! www.best-rx-deals.xyz", author="pharma4u"),
    CommentText(body="That's sciatica. Take 800mg ibuprofen every 6 hours and skip the physio."),
    CommentText(body="Mi fisio me dijo que caminara más y funcionó."),
]
TINY_X = np.array([[0.0, 1.0], [1.0, 0.0], [2.0, 1.0], [3.0, 0.0]])
TINY_Y = np.array([0, 0, 1, 1])


class Gadget:
    """A type no reviewer has looked at."""

    def __init__(self) -> None:
        self.payload = "anything"


def dump(payload: dict[str, object], path: Path) -> registry.SavedArtifact:
    sio.dump(payload, path)
    return registry.SavedArtifact(path, registry.file_sha256(path))


def register(engine: Engine, version: str, artifact: registry.SavedArtifact, card: dict[str, object]) -> None:
    with make_session_factory(engine).begin() as session:
        registry.register(session, version, artifact, {**card, "version": version})


def activate(engine: Engine, version: str, now: datetime | None = None) -> None:
    with make_session_factory(engine).begin() as session:
        registry.activate(session, version, now)


def active(engine: Engine) -> list[str]:
    with make_session_factory(engine)() as session:
        return list(session.scalars(select(ModelVersion.version).where(ModelVersion.is_active)))


# --- artifacts -----------------------------------------------------------------------------------


def test_round_trip_gives_the_same_probabilities_and_explanations(trained_model: TrainedModel) -> None:
    original = trained_model.model
    artifact = trained_model.artifact
    loaded = registry.load_artifact(artifact.path, artifact.sha256, original.card)

    assert loaded.version == trained_model.version
    before, after = original.transform(COMMENTS), loaded.transform(COMMENTS)
    for label in LABELS:
        np.testing.assert_allclose(
            loaded.classifiers[label].predict_proba(after), original.classifiers[label].predict_proba(before)
        )
    assert loaded.score_many(COMMENTS) == original.score_many(COMMENTS)
    for comment in COMMENTS:
        assert loaded.explain(comment) == original.explain(comment)
    assert any(loaded.explain(c)["spam"] for c in COMMENTS)  # the comparison above is not of empty lists


def test_the_card_is_written_beside_the_model(trained_model: TrainedModel, tmp_path: Path) -> None:
    saved = registry.save_artifact(trained_model.model, tmp_path, "v-card")
    card = json.loads((tmp_path / "model-v-card.card.json").read_text())
    assert card["thresholds"] == trained_model.model.card["thresholds"]
    assert {"scikit-learn", "skops", "numpy"} <= set(card["libraries"])
    assert saved.sha256 == registry.file_sha256(saved.path)


def test_the_card_names_the_features_the_model_was_trained_on(
    trained_model: TrainedModel, caplog: pytest.LogCaptureFixture
) -> None:
    card = trained_model.model.card
    assert card["features_version"] == FEATURES_VERSION
    path, sha256 = trained_model.artifact.path, trained_model.artifact.sha256
    with caplog.at_level(logging.WARNING, logger="moderation.registry"):
        registry.load_artifact(path, sha256, card)
    assert not caplog.records

    unrecorded = {k: v for k, v in card.items() if k != "features_version"}
    for older in ({**card, "features_version": "2020-01-01"}, unrecorded):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="moderation.registry"):
            loaded = registry.load_artifact(path, sha256, older)
        assert loaded.score(CommentText(body="Thanks, great article")).spam >= 0  # still usable
        assert "train again" in caplog.text and FEATURES_VERSION in caplog.text
        assert not registry.made_for_these_features(older)


def test_a_file_with_one_byte_changed_is_refused(trained_model: TrainedModel, tmp_path: Path) -> None:
    tampered = tmp_path / "tampered.skops"
    data = bytearray(trained_model.artifact.path.read_bytes())
    data[len(data) // 2] ^= 0x01
    tampered.write_bytes(bytes(data))

    with pytest.raises(registry.RegistryError, match="checksum"):
        registry.load_artifact(tampered, trained_model.artifact.sha256, {})


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(registry.RegistryError, match="missing"):
        registry.load_artifact(tmp_path / "gone.skops", "0" * 64, {})


@pytest.mark.parametrize(
    ("make", "named"),
    [
        (Gadget, "Gadget"),
        (lambda: DecisionTreeClassifier(random_state=0).fit(TINY_X, TINY_Y), "sklearn.tree"),
    ],
    ids=["custom-class", "decision-tree"],
)
def test_a_file_holding_an_untrusted_type_is_refused(tmp_path: Path, make: object, named: str) -> None:
    obj = make()  # type: ignore[operator]
    artifact = dump({"vectorizer": obj, "spam": obj, "medical_advice": obj}, tmp_path / "odd.skops")

    with pytest.raises(registry.RegistryError, match="not trusted") as refused:
        registry.load_artifact(artifact.path, artifact.sha256, {})
    assert named in str(refused.value)


def test_a_scikit_learn_type_outside_the_reviewed_list_is_refused(tmp_path: Path) -> None:
    assert "sklearn.naive_bayes.MultinomialNB" not in registry.TRUSTED_TYPES
    estimator = MultinomialNB().fit(TINY_X, TINY_Y)
    artifact = dump({"vectorizer": estimator, "spam": estimator, "medical_advice": estimator}, tmp_path / "nb.skops")

    with pytest.raises(registry.RegistryError, match="not trusted"):
        registry.load_artifact(artifact.path, artifact.sha256, {})


# --- versions in the database --------------------------------------------------------------------


def test_activate_keeps_exactly_one_version_active_and_rollback_returns_to_the_previous(
    engine: Engine, trained_model: TrainedModel
) -> None:
    card = trained_model.model.card
    for version in ("v1", "v2", "v3"):
        register(engine, version, trained_model.artifact, card)
    now = datetime.now(UTC)
    activate(engine, "v1", now - timedelta(hours=3))
    activate(engine, "v2", now - timedelta(hours=2))
    assert active(engine) == ["v2"]
    activate(engine, "v3", now - timedelta(hours=1))
    assert active(engine) == ["v3"]

    with make_session_factory(engine).begin() as session:
        assert registry.rollback(session).version == "v2"
    assert active(engine) == ["v2"]
    # A second rollback steps further back instead of flipping between the last two versions.
    with make_session_factory(engine).begin() as session:
        assert registry.rollback(session).version == "v1"
    assert active(engine) == ["v1"]
    with make_session_factory(engine).begin() as session, pytest.raises(registry.RegistryError, match="earlier"):
        registry.rollback(session)
    # Activating a rolled-back version again puts it back at the top of the history.
    activate(engine, "v3", now)
    with make_session_factory(engine).begin() as session:
        assert registry.rollback(session).version == "v1"


def test_activating_the_active_version_again_changes_nothing(engine: Engine, trained_model: TrainedModel) -> None:
    """Its activation time moved to now (a new user's test): history that `models list` shows and `rollback`
    reads said an activation happened that did not."""
    register(engine, "v1", trained_model.artifact, trained_model.model.card)
    then = datetime.now(UTC) - timedelta(hours=3)
    activate(engine, "v1", then)
    activate(engine, "v1", datetime.now(UTC))
    with make_session_factory(engine)() as session:
        kept = session.scalars(select(ModelVersion.activated_at).where(ModelVersion.version == "v1")).one()
    assert kept is not None and kept.replace(tzinfo=UTC) == then


def test_rollback_without_an_earlier_version_is_an_error(engine: Engine, trained_model: TrainedModel) -> None:
    register(engine, "only", trained_model.artifact, trained_model.model.card)
    with make_session_factory(engine).begin() as session, pytest.raises(registry.RegistryError, match="earlier"):
        registry.rollback(session)
    activate(engine, "only")
    with make_session_factory(engine).begin() as session, pytest.raises(registry.RegistryError, match="earlier"):
        registry.rollback(session)
    assert active(engine) == ["only"]


def test_activate_refuses_unknown_versions_and_missing_files(
    engine: Engine, trained_model: TrainedModel, tmp_path: Path
) -> None:
    copy = tmp_path / "copy.skops"
    shutil.copy(trained_model.artifact.path, copy)
    register(engine, "good", trained_model.artifact, trained_model.model.card)
    register(engine, "lost", registry.SavedArtifact(copy, trained_model.artifact.sha256), trained_model.model.card)
    activate(engine, "good")
    copy.unlink()

    with make_session_factory(engine).begin() as session:
        with pytest.raises(registry.RegistryError, match="no model version"):
            registry.activate(session, "nope")
        with pytest.raises(registry.RegistryError, match=r"lost cannot be activated: model file copy\.skops"):
            registry.activate(session, "lost")
    assert active(engine) == ["good"]


def corrupt(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.fixture
def two_versions(engine: Engine, trained_model: TrainedModel, tmp_path: Path) -> Path:
    """Versions v1 then v2 activated, each with its own copy of the file in a model folder (returned)."""
    model_dir = tmp_path / "models"
    model_dir.mkdir()
    now = datetime.now(UTC)
    for hours_ago, version in ((2, "v1"), (1, "v2")):
        path = model_dir / f"model-{version}.skops"
        shutil.copy(trained_model.artifact.path, path)
        register(engine, version, registry.SavedArtifact(path, trained_model.artifact.sha256), trained_model.model.card)
        activate(engine, version, now - timedelta(hours=hours_ago))
    return model_dir


def test_rollback_refuses_a_previous_version_whose_file_is_missing(engine: Engine, two_versions: Path) -> None:
    (two_versions / "model-v1.skops").unlink()
    with make_session_factory(engine).begin() as session, pytest.raises(registry.RegistryError) as refused:
        registry.rollback(session, model_dir=two_versions)
    assert str(refused.value) == (
        f"cannot roll back to model version v1: model file model-v1.skops is missing: not in MODEL_DIR "
        f"{two_versions}; model v2 stays active"
    )
    assert active(engine) == ["v2"]
    with make_session_factory(engine)() as session:  # still in the history: restoring the file makes it work
        assert [row.version for row in registry.list_versions(session) if row.activated_at is not None] == [
            "v2",
            "v1",
        ]


def test_rollback_and_activate_refuse_a_version_whose_file_is_corrupt(engine: Engine, two_versions: Path) -> None:
    corrupt(two_versions / "model-v1.skops")
    with make_session_factory(engine).begin() as session, pytest.raises(registry.RegistryError) as refused:
        registry.rollback(session, model_dir=two_versions)
    message = str(refused.value)
    assert message.startswith(f"cannot roll back to model version v1: model file {two_versions / 'model-v1.skops'}")
    assert "corrupt or replaced" in message and message.endswith("; model v2 stays active")
    with make_session_factory(engine).begin() as session, pytest.raises(registry.RegistryError) as refused:
        registry.activate(session, "v1", model_dir=two_versions)
    assert str(refused.value).startswith("model version v1 cannot be activated: model file ")
    assert active(engine) == ["v2"]
    # What both refused is what a worker could not have loaded.
    store = registry.ModelStore(make_session_factory(engine), check_interval=0, model_dir=two_versions)
    assert store.current().version == "v2"


def test_rollback_and_activate_refuse_a_version_whose_file_cannot_even_be_looked_up(
    engine: Engine, two_versions: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a shared MODEL_DIR, stat() itself can fail (an NFS stale handle, EIO, EACCES on the folder): pathlib's
    is_file() lets those through. Looking for the file escaped as an OSError (a traceback from the command, a
    500 from the models page); it is refused as a file that cannot be read is. (No NFS here: the error is
    simulated.)"""
    looked_up = Path.is_file

    def stale(path: Path) -> bool:
        if path.name == "model-v1.skops":
            raise OSError(errno.ESTALE, "Stale file handle", str(path))
        return looked_up(path)

    monkeypatch.setattr(Path, "is_file", stale)
    with make_session_factory(engine).begin() as session, pytest.raises(registry.RegistryError) as refused:
        registry.rollback(session, model_dir=two_versions)
    assert str(refused.value).startswith("cannot roll back to model version v1: model file of version v1 cannot")
    assert "Stale file handle" in str(refused.value) and str(refused.value).endswith("; model v2 stays active")
    with make_session_factory(engine).begin() as session, pytest.raises(registry.RegistryError, match="Stale file"):
        registry.activate(session, "v1", model_dir=two_versions)
    assert active(engine) == ["v2"]


def test_rollback_to_an_intact_file_found_in_model_dir(engine: Engine, two_versions: Path, tmp_path: Path) -> None:
    moved = tmp_path / "mounted-elsewhere"
    shutil.move(two_versions, moved)
    with make_session_factory(engine).begin() as session:
        assert registry.rollback(session, model_dir=moved).version == "v1"
    assert active(engine) == ["v1"]


def test_the_database_refuses_two_active_versions(engine: Engine) -> None:
    def row(version: str, is_active: bool) -> ModelVersion:
        return ModelVersion(version=version, path=f"/models/{version}.skops", sha256="0" * 64, is_active=is_active)

    sessions = make_session_factory(engine)
    with sessions.begin() as session:
        session.add_all([row("a", True), row("b", False), row("c", False)])
    with pytest.raises(IntegrityError), sessions.begin() as session:
        session.add(row("d", True))
    with pytest.raises(IntegrityError), sessions.begin() as session:
        session.scalars(select(ModelVersion).where(ModelVersion.version == "b")).one().is_active = True
    with engine.connect() as connection:
        assert connection.scalar(select(func.count()).where(ModelVersion.is_active)) == 1


# --- the store a worker keeps --------------------------------------------------------------------


def test_model_store_picks_up_a_new_active_version(engine: Engine, trained_model: TrainedModel) -> None:
    store = registry.ModelStore(make_session_factory(engine), check_interval=0)
    with pytest.raises(registry.RegistryError, match="no model is active"):
        store.current()

    register(engine, "v1", trained_model.artifact, trained_model.model.card)
    register(engine, "v2", trained_model.artifact, trained_model.model.card)
    activate(engine, "v1")
    first = store.current()
    assert first.version == "v1"
    assert store.current() is first  # unchanged version: not loaded again

    activate(engine, "v2")
    assert store.current().version == "v2"
    with make_session_factory(engine).begin() as session:
        registry.rollback(session)
    assert store.current().version == "v1"


def test_a_model_store_decides_with_no_version_but_the_active_one_even_when_it_cannot_be_loaded(
    engine: Engine, trained_model: TrainedModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An operator activated v2 to move away from v1, and v2's file was altered on this host: a worker that had v1
    loaded went on deciding with it, while `models list` and the metrics said v2. Now it refuses, as a worker
    started afresh does, until the file is mended or another version is activated."""
    model_dir = tmp_path / "models"
    model_dir.mkdir()
    for version in ("v1", "v2"):
        copy = model_dir / f"model-{version}.skops"
        shutil.copyfile(trained_model.artifact.path, copy)
        register(engine, version, registry.SavedArtifact(copy, trained_model.artifact.sha256), trained_model.model.card)
    activate(engine, "v1")
    clock = [1000.0]
    monkeypatch.setattr(registry, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    store = registry.ModelStore(make_session_factory(engine), check_interval=10, model_dir=model_dir)
    assert store.current().version == "v1"

    activate(engine, "v2")
    corrupt(model_dir / "model-v2.skops")  # after its activation checked it: altered on this host since
    clock[0] += 10
    for _ in range(3):  # at the check, and between checks (where the old model was handed out again)
        with pytest.raises(registry.RegistryError, match="corrupt or replaced"):
            store.current()
        clock[0] += 1

    with make_session_factory(engine).begin() as session:
        registry.rollback(session, model_dir=model_dir)
    clock[0] += 10
    assert store.current().version == "v1"


def test_model_store_asks_the_database_only_every_check_interval(engine: Engine, trained_model: TrainedModel) -> None:
    register(engine, "v1", trained_model.artifact, trained_model.model.card)
    register(engine, "v2", trained_model.artifact, trained_model.model.card)
    activate(engine, "v1")
    store = registry.ModelStore(make_session_factory(engine), check_interval=3600)
    assert store.current().version == "v1"
    activate(engine, "v2")
    assert store.current().version == "v1"


# --- the file found in this process's MODEL_DIR --------------------------------------------------


@dataclass(frozen=True)
class MovedModel:
    saved_at: Path  # the path the registry stores, which no longer exists
    model_dir: Path  # where the folder is now, as another host or a restored backup sees it


@pytest.fixture
def moved_model(engine: Engine, trained_model: TrainedModel, tmp_path: Path) -> MovedModel:
    """Version "moved" saved and activated in one folder, "next" registered beside it; then the folder moved."""
    trained_in = tmp_path / "trained-here"
    saved = registry.SavedArtifact(trained_in / trained_model.artifact.path.name, trained_model.artifact.sha256)
    trained_in.mkdir()
    shutil.copy(trained_model.artifact.path, saved.path)
    register(engine, "moved", saved, trained_model.model.card)
    register(engine, "next", saved, trained_model.model.card)
    activate(engine, "moved")
    model_dir = tmp_path / "mounted-elsewhere"
    shutil.move(trained_in, model_dir)
    return MovedModel(saved.path, model_dir)


def test_a_model_whose_folder_moved_loads_from_the_model_dir_given(engine: Engine, moved_model: MovedModel) -> None:
    store = registry.ModelStore(make_session_factory(engine), check_interval=0, model_dir=moved_model.model_dir)
    assert store.current().version == "moved"
    with make_session_factory(engine)() as session:  # the registry still records where the file was saved
        assert {row.path for row in registry.list_versions(session)} == {str(moved_model.saved_at)}


def test_a_worker_finds_the_model_in_its_own_model_dir(
    database_url: str, redis_url: str, tmp_path: Path, moved_model: MovedModel
) -> None:
    settings = Settings(
        var_dir=tmp_path / "var", database_url=database_url, redis_url=redis_url, model_dir=moved_model.model_dir
    )
    runtime = build_runtime(settings, build_celery(settings))
    try:
        assert runtime.models.current().version == "moved"
    finally:
        runtime.sessions.kw["bind"].dispose()


def test_classify_and_models_activate_use_the_commands_model_dir(
    database_url: str, tmp_path: Path, moved_model: MovedModel
) -> None:
    """The console script as an operator runs it on a host that mounts the model folder elsewhere."""
    script = Path(sys.executable).with_name("moderation")
    env = {name: value for name, value in os.environ.items() if name in ("PATH", "HOME", "LANG")}
    env |= {"VAR_DIR": str(tmp_path / "var"), "DATABASE_URL": database_url, "LOG_LEVEL": "WARNING"}
    comment = json.dumps({"body": "Thanks, the stretches in this article really helped my lower back."}) + "\n"

    def moderation(model_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
        run_env = env | {"MODEL_DIR": str(model_dir)}
        return subprocess.run([script, *args], env=run_env, input=comment, capture_output=True, text=True, timeout=120)

    classified = moderation(moved_model.model_dir, "classify")
    assert classified.returncode == 0, classified.stderr
    assert json.loads(classified.stdout.splitlines()[-1])["model_version"] == "moved"

    activated = moderation(moved_model.model_dir, "models", "activate", "next")
    assert activated.returncode == 0, activated.stderr
    assert activated.stdout.strip() == "model next is active; workers switch within MODEL_CHECK_INTERVAL_SECONDS"

    empty = tmp_path / "empty"
    empty.mkdir()
    refused = moderation(empty, "classify")
    assert refused.returncode != 0
    assert f"not in MODEL_DIR {empty.resolve()}, nor at {moved_model.saved_at}" in refused.stderr


def test_a_model_in_neither_place_is_refused_naming_both(
    engine: Engine, moved_model: MovedModel, tmp_path: Path
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    name = moved_model.saved_at.name
    looked = f"model file {name} is missing: not in MODEL_DIR {empty}, nor at {moved_model.saved_at} where it was saved"

    store = registry.ModelStore(make_session_factory(engine), check_interval=0, model_dir=empty)
    with pytest.raises(registry.RegistryError) as refused:
        store.current()
    assert str(refused.value) == looked
    with make_session_factory(engine).begin() as session, pytest.raises(registry.RegistryError) as refused:
        registry.activate(session, "next", model_dir=empty)
    assert str(refused.value) == f"model version next cannot be activated: {looked}"
    assert active(engine) == ["moved"]


def test_a_file_still_where_it_was_saved_is_used_when_model_dir_lacks_it(
    engine: Engine, trained_model: TrainedModel, tmp_path: Path
) -> None:
    register(engine, "v1", trained_model.artifact, trained_model.model.card)
    activate(engine, "v1")
    empty = tmp_path / "empty"
    empty.mkdir()
    store = registry.ModelStore(make_session_factory(engine), check_interval=0, model_dir=empty)
    assert store.current().version == "v1"


def test_a_corrupt_copy_in_model_dir_is_refused_even_with_an_intact_file_where_saved(
    engine: Engine, trained_model: TrainedModel, tmp_path: Path
) -> None:
    register(engine, "v1", trained_model.artifact, trained_model.model.card)
    activate(engine, "v1")
    model_dir = tmp_path / "shared"
    model_dir.mkdir()
    data = bytearray(trained_model.artifact.path.read_bytes())
    data[len(data) // 2] ^= 0x01
    (model_dir / trained_model.artifact.path.name).write_bytes(bytes(data))

    store = registry.ModelStore(make_session_factory(engine), check_interval=0, model_dir=model_dir)
    with pytest.raises(registry.RegistryError, match="checksum") as refused:
        store.current()
    assert str(model_dir / trained_model.artifact.path.name) in str(refused.value)
    assert trained_model.artifact.path.exists()  # an intact file was there: MODEL_DIR's copy is what counts


# --- importing a model saved by another install --------------------------------------------------


def import_into(engine: Engine, path: Path, model_dir: Path, **options: bool) -> registry.ImportedModel:
    with make_session_factory(engine).begin() as session:
        return registry.import_artifact(session, path, model_dir, **options)


def registered(engine: Engine) -> list[tuple[str, str, str]]:
    with make_session_factory(engine)() as session:
        return [(row.version, row.path, row.sha256) for row in registry.list_versions(session)]


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_a_model_saved_by_another_install_is_copied_into_model_dir_and_registered(
    engine: Engine, trained_model: TrainedModel, tmp_path: Path
) -> None:
    staging = tmp_path / "staging-models"
    path = saved_elsewhere(trained_model, staging, "from-staging")
    card = json.loads((staging / "model-from-staging.card.json").read_text())
    model_dir = tmp_path / "models"

    imported = import_into(engine, path, model_dir)

    copy = model_dir / "model-from-staging.skops"
    assert imported.registered_now and imported.copied == (copy, model_dir / "model-from-staging.card.json")
    assert files_in(model_dir) == ["model-from-staging.card.json", "model-from-staging.skops"]
    assert copy.read_bytes() == path.read_bytes()
    assert json.loads((model_dir / "model-from-staging.card.json").read_text()) == card
    assert registered(engine) == [("from-staging", str(copy), trained_model.artifact.sha256)]
    assert imported.row.card == card
    assert active(engine) == []  # imported, not activated

    shutil.rmtree(staging)  # the other install's folder plays no further part
    with make_session_factory(engine).begin() as session:
        registry.activate(session, "from-staging", model_dir=model_dir)
    store = registry.ModelStore(make_session_factory(engine), check_interval=0, model_dir=model_dir)
    model = store.current()
    assert model.version == "from-staging"
    assert model.score_many(COMMENTS) == trained_model.model.score_many(COMMENTS)


def test_importing_the_same_file_twice_registers_it_once(
    engine: Engine, trained_model: TrainedModel, tmp_path: Path
) -> None:
    model_dir = tmp_path / "models"
    first = import_into(engine, trained_model.artifact.path, model_dir)
    again = import_into(engine, trained_model.artifact.path, model_dir)

    assert first.registered_now and not again.registered_now
    assert again.copied == () and again.row.id == first.row.id
    assert registered(engine) == [("test-model", str(model_dir / "model-test-model.skops"), first.row.sha256)]
    assert files_in(model_dir) == ["model-test-model.card.json", "model-test-model.skops"]


def test_on_postgresql_an_import_waits_for_the_one_under_way_on_any_host(
    engine: Engine, trained_model: TrainedModel, tmp_path: Path
) -> None:
    """The race the lock prevents: the second import finds the first's copy and registers, then the first's
    registration fails and removes the file the second's row names. Hosts share no folder lock; the database
    is the one place both meet."""
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite is one host's: `models import` holds a lock on MODEL_DIR there (tests/test_cli.py)")
    results: list[registry.ImportedModel] = []
    second = threading.Thread(target=lambda: results.append(import_into(engine, trained_model.artifact.path, tmp_path)))
    with engine.connect() as other_host, other_host.begin():  # another host's import, under way
        other_host.execute(select(func.pg_advisory_xact_lock(registry.IMPORT_LOCK_ID)))
        second.start()
        second.join(timeout=5)  # an import that did not wait takes a second or two here
        assert second.is_alive() and registered(engine) == []
    second.join(timeout=60)
    assert results and results[0].registered_now
    assert registered(engine) == [
        ("test-model", str(tmp_path / "model-test-model.skops"), trained_model.artifact.sha256)
    ]


def test_a_model_dir_that_refuses_locks_is_used_without_one_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An NFS folder refuses flock on a directory (EBADF): no NFS here, so the refusal is simulated."""

    def refuse(fd: int, operation: int) -> None:
        raise OSError(errno.EBADF, "Bad file descriptor")

    monkeypatch.setattr(fcntl, "flock", refuse)
    with caplog.at_level(logging.WARNING, logger="moderation.registry"), registry.import_lock(tmp_path / "models"):
        entered = True
    assert entered
    assert f"MODEL_DIR {tmp_path / 'models'} cannot be locked" in caplog.text and "not serialized" in caplog.text


def test_the_same_version_name_with_other_content_is_refused(
    engine: Engine, trained_model: TrainedModel, tmp_path: Path
) -> None:
    model_dir = tmp_path / "models"
    import_into(engine, trained_model.artifact.path, model_dir)
    other = registry.save_artifact(
        replace(trained_model.model, trained_fingerprints=None), tmp_path / "b", "test-model"
    )
    assert other.sha256 != trained_model.artifact.sha256

    with pytest.raises(registry.RegistryError) as refused:
        import_into(engine, other.path, model_dir)

    assert str(refused.value) == (
        f"model version test-model is already registered with another file (checksum "
        f"{trained_model.artifact.sha256}, this one's is {other.sha256}): not imported"
    )
    assert registered(engine) == [
        ("test-model", str(model_dir / "model-test-model.skops"), trained_model.artifact.sha256)
    ]
    assert registry.file_sha256(model_dir / "model-test-model.skops") == trained_model.artifact.sha256


def test_a_different_file_of_that_name_in_model_dir_is_not_overwritten(
    engine: Engine, trained_model: TrainedModel, tmp_path: Path
) -> None:
    model_dir = tmp_path / "models"
    there = registry.save_artifact(replace(trained_model.model, trained_fingerprints=None), model_dir, "test-model")

    with pytest.raises(registry.RegistryError) as refused:
        import_into(engine, trained_model.artifact.path, model_dir)

    assert str(refused.value).startswith(f"MODEL_DIR {model_dir} already holds a different model-test-model.skops")
    assert registry.file_sha256(there.path) == there.sha256
    assert registered(engine) == []


@pytest.mark.parametrize(
    ("card_text", "says"),
    [(None, "is missing"), ("[1, 2]", "is not a JSON object"), ("{not json", "is not a JSON object")],
    ids=["missing", "a-list", "not-json"],
)
def test_a_model_file_without_a_card_object_beside_it_is_refused(
    engine: Engine, trained_model: TrainedModel, tmp_path: Path, card_text: str | None, says: str
) -> None:
    path = saved_elsewhere(trained_model, tmp_path / "staging", "carded")
    card = tmp_path / "staging" / "model-carded.card.json"
    if card_text is None:
        card.unlink()
    else:
        card.write_text(card_text)
    model_dir = tmp_path / "models"

    with pytest.raises(registry.RegistryError) as refused:
        import_into(engine, path, model_dir)

    assert str(refused.value).startswith(f"model card {card} {says}")
    assert "\n" not in str(refused.value)
    assert files_in(model_dir) == [] and registered(engine) == []


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"version": "../../escape"}, "version '../../escape' is not a name of 1 to 64 letters"),
        ({"version": "x; rm -rf ~"}, "is not a name of 1 to 64 letters"),
        ({"version": "another"}, "names version another, the file's name ok"),
        ({"thresholds": None}, "no usable thresholds"),
        ({"thresholds": {"spam_reject": 0.3, "spam_hold": 0.6, "advice_hold": 0.1}}, "no usable thresholds"),
        ({"thresholds": {"spam_reject": "high", "spam_hold": 0.1, "advice_hold": 0.1}}, "no usable thresholds"),
    ],
    ids=["path", "shell", "other-name", "no-thresholds", "hold-above-reject", "not-a-number"],
)
def test_a_card_that_would_misname_or_break_the_model_is_refused(
    engine: Engine, trained_model: TrainedModel, tmp_path: Path, changes: dict[str, object], says: str
) -> None:
    """The version becomes file and report-folder names and is printed into commands; every classify task
    builds its policy from the thresholds."""
    path = saved_elsewhere(trained_model, tmp_path / "staging", "ok")
    card_path = tmp_path / "staging" / "model-ok.card.json"
    card = {**json.loads(card_path.read_text()), **changes}
    if card.get("thresholds") is None:
        card.pop("thresholds")
    card_path.write_text(json.dumps(card))

    with pytest.raises(registry.RegistryError, match=re.escape(says)):
        import_into(engine, path, tmp_path / "models")
    assert files_in(tmp_path / "models") == [] and registered(engine) == []


def test_a_file_not_named_like_a_model_is_refused(engine: Engine, trained_model: TrainedModel, tmp_path: Path) -> None:
    odd = tmp_path / "classifier.skops"
    shutil.copy(trained_model.artifact.path, odd)
    with pytest.raises(registry.RegistryError, match=r"its name must be model-<version>\.skops"):
        import_into(engine, odd, tmp_path / "models")
    typo = tmp_path / "clasifier.skops"  # a path that names nothing: said so, whatever its name
    with pytest.raises(registry.RegistryError, match=rf"^model file {re.escape(str(typo))} is missing$"):
        import_into(engine, typo, tmp_path / "models")
    assert registered(engine) == []


def test_a_card_without_a_version_takes_it_from_the_file_name(
    engine: Engine, trained_model: TrainedModel, tmp_path: Path
) -> None:
    path = saved_elsewhere(trained_model, tmp_path / "staging", "named-by-file")
    card_path = tmp_path / "staging" / "model-named-by-file.card.json"
    card = json.loads(card_path.read_text())
    del card["version"]
    card_path.write_text(json.dumps(card))

    imported = import_into(engine, path, tmp_path / "models")

    assert imported.row.version == "named-by-file" and imported.row.card["version"] == "named-by-file"


@pytest.mark.parametrize(
    ("make", "named"),
    [(Gadget, "tests.test_registry.Gadget"), (lambda: MultinomialNB().fit(TINY_X, TINY_Y), "MultinomialNB")],
    ids=["custom-class", "naive-bayes"],
)
def test_a_file_holding_an_untrusted_type_is_not_imported(
    engine: Engine, trained_model: TrainedModel, tmp_path: Path, make: object, named: str
) -> None:
    staging = tmp_path / "staging"
    staging.mkdir()
    obj = make()  # type: ignore[operator]
    artifact = dump({"vectorizer": obj, "spam": obj, "medical_advice": obj}, staging / "model-odd.skops")
    (staging / "model-odd.card.json").write_text(json.dumps({**trained_model.model.card, "version": "odd"}))
    model_dir = tmp_path / "models"

    with pytest.raises(registry.RegistryError, match="not trusted") as refused:
        import_into(engine, artifact.path, model_dir)

    assert named in str(refused.value)
    assert files_in(model_dir) == [] and registered(engine) == []


@pytest.mark.parametrize("content", ["trusted-but-no-model", "not-a-zip"])
def test_a_file_that_does_not_load_as_a_model_is_not_imported(
    engine: Engine, trained_model: TrainedModel, tmp_path: Path, content: str
) -> None:
    path = saved_elsewhere(trained_model, tmp_path / "staging", "broken")
    if content == "not-a-zip":
        path.write_text("<html>Service unavailable</html>")
    else:
        sio.dump({"weights": np.arange(3.0)}, path)
    model_dir = tmp_path / "models"

    with pytest.raises(registry.RegistryError) as refused:
        import_into(engine, path, model_dir)

    said = "does not load as a model: KeyError" if content == "trusted-but-no-model" else "is not a skops file"
    assert str(refused.value).startswith(f"model file {path} {said}")
    assert files_in(model_dir) == [] and registered(engine) == []


def test_a_model_made_for_other_features_needs_allow_other_features(
    engine: Engine, trained_model: TrainedModel, tmp_path: Path
) -> None:
    path = saved_elsewhere(trained_model, tmp_path / "staging", "older", features_version="2020-01-01")
    model_dir = tmp_path / "models"

    with pytest.raises(registry.RegistryError) as refused:
        import_into(engine, path, model_dir)
    assert str(refused.value) == (
        f"model older was trained on features of version 2020-01-01, this code makes version {FEATURES_VERSION}: "
        "its scores would drift; train it again here, or import it anyway with --allow-other-features"
    )
    assert files_in(model_dir) == [] and registered(engine) == []

    imported = import_into(engine, path, model_dir, allow_other_features=True)
    assert imported.row.card["features_version"] == "2020-01-01"
    assert [version for version, _, _ in registered(engine)] == ["older"]


@pytest.fixture
def refusing_registrations(engine: Engine) -> Iterator[None]:
    """The database refuses every new model_versions row, as it would when its disk is full."""
    sqlite = engine.dialect.name == "sqlite"
    with engine.begin() as connection:
        if sqlite:
            connection.execute(
                text(
                    "CREATE TRIGGER refuse_models BEFORE INSERT ON model_versions "
                    "BEGIN SELECT RAISE(ABORT, 'no space left on device'); END"
                )
            )
        else:
            connection.execute(
                text(
                    "CREATE FUNCTION refuse_models() RETURNS trigger LANGUAGE plpgsql AS "
                    "$$ BEGIN RAISE EXCEPTION 'no space left on device'; END $$"
                )
            )
            connection.execute(
                text(
                    "CREATE TRIGGER refuse_models BEFORE INSERT ON model_versions "
                    "FOR EACH ROW EXECUTE FUNCTION refuse_models()"
                )
            )
    yield
    with engine.begin() as connection:
        connection.execute(text("DROP TRIGGER refuse_models" + ("" if sqlite else " ON model_versions")))
        if not sqlite:
            connection.execute(text("DROP FUNCTION refuse_models()"))


@pytest.mark.usefixtures("refusing_registrations")
def test_a_failed_registration_leaves_no_copied_file(
    engine: Engine, trained_model: TrainedModel, tmp_path: Path
) -> None:
    model_dir = tmp_path / "models"
    with pytest.raises(registry.RegistryError) as refused:
        import_into(engine, trained_model.artifact.path, model_dir)

    assert str(refused.value).startswith("model version test-model could not be registered: ")
    assert "no space left on device" in str(refused.value) and "\n" not in str(refused.value)
    assert files_in(model_dir) == [] and registered(engine) == []
    assert trained_model.artifact.path.exists()  # the file imported from is left alone


def test_a_copy_goes_again_when_the_transaction_that_registered_it_does_not_commit(
    engine: Engine, trained_model: TrainedModel, tmp_path: Path
) -> None:
    model_dir = tmp_path / "models"
    sessions = make_session_factory(engine)
    with pytest.raises(RuntimeError, match="later step"), sessions.begin() as session:
        registry.import_artifact(session, trained_model.artifact.path, model_dir)
        assert files_in(model_dir) == ["model-test-model.card.json", "model-test-model.skops"]
        raise RuntimeError("a later step of the same transaction failed")
    assert files_in(model_dir) == [] and registered(engine) == []

    with sessions() as session:  # closed without a commit
        registry.import_artifact(session, trained_model.artifact.path, model_dir)
    assert files_in(model_dir) == [] and registered(engine) == []

    # Files that were there before the import are not the import's to remove.
    kept = import_into(engine, trained_model.artifact.path, model_dir)
    assert kept.copied and files_in(model_dir) == ["model-test-model.card.json", "model-test-model.skops"]
    with pytest.raises(RuntimeError), sessions.begin() as session:
        assert registry.import_artifact(session, trained_model.artifact.path, model_dir).copied == ()
        raise RuntimeError("rolled back")
    assert files_in(model_dir) == ["model-test-model.card.json", "model-test-model.skops"]
