"""The test session's model cache (tests/support/model_cache.py): a cached model is the model that was stored,
and anything wrong with the cache means training again, never a wrong model."""

from __future__ import annotations

import fcntl
from pathlib import Path

import numpy as np
import pytest

from moderation.features import CommentText
from tests.conftest import TEST_MODEL_TRAINING, TrainedModel
from tests.support.model_cache import ModelCache

COMMENTS = [CommentText(body="Take 800mg ibuprofen every 6 hours."), CommentText(body="Cheap pills: rx-deals.example")]


def test_a_stored_model_loads_back_scoring_as_it_did(trained_model: TrainedModel, tmp_path: Path) -> None:
    folder = tmp_path / "cache"
    folder.mkdir()
    cache = ModelCache(folder, TEST_MODEL_TRAINING)
    cache.store(trained_model.artifact)
    loaded = cache.load(tmp_path, "again")
    assert loaded is not None
    model, artifact = loaded
    assert artifact.path == tmp_path / "model-again.skops" and artifact.sha256 == trained_model.artifact.sha256
    for label, scores in trained_model.model.probabilities(COMMENTS).items():
        np.testing.assert_allclose(model.probabilities(COMMENTS)[label], scores)


def test_a_damaged_or_missing_cache_means_training_again(trained_model: TrainedModel, tmp_path: Path) -> None:
    folder = tmp_path / "cache"
    folder.mkdir()
    cache = ModelCache(folder, TEST_MODEL_TRAINING)
    assert cache.load(tmp_path, "none") is None
    cache.store(trained_model.artifact)
    model_file = next(folder.glob("*.skops"))
    model_file.write_bytes(model_file.read_bytes()[:1000])
    assert cache.load(tmp_path, "damaged") is None


def test_other_training_arguments_or_no_cache_folder_mean_training_again(
    trained_model: TrainedModel, tmp_path: Path
) -> None:
    folder = tmp_path / "cache"
    folder.mkdir()
    cache = ModelCache(folder, TEST_MODEL_TRAINING)
    cache.store(trained_model.artifact)
    assert ModelCache(folder, {**TEST_MODEL_TRAINING, "folds": 3}).load(tmp_path, "other") is None
    assert ModelCache(None, TEST_MODEL_TRAINING).load(tmp_path, "none") is None
    ModelCache(None, TEST_MODEL_TRAINING).store(trained_model.artifact)  # nothing to keep it in: no error


def test_one_process_at_a_time_looks_for_trains_and_stores_the_model(tmp_path: Path) -> None:
    folder = tmp_path / "trained-model"
    folder.mkdir()
    lock = tmp_path / "trained-model.lock"
    # Another process (its own open file) would wait here.
    with ModelCache(folder, TEST_MODEL_TRAINING).exclusive(), open(lock) as other, pytest.raises(BlockingIOError):
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
    with open(lock) as other:
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # and goes on once the first is done
