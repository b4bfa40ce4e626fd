"""A model as another install saved it, for `models import`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.conftest import TrainedModel


def saved_elsewhere(trained_model: TrainedModel, folder: Path, version: str, **card_changes: object) -> Path:
    """The test model as another install (staging, a laptop) saved it: model-<version>.skops, its card beside."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"model-{version}.skops"
    shutil.copy(trained_model.artifact.path, path)
    card = {**trained_model.model.card, "version": version, **card_changes}
    (folder / f"model-{version}.card.json").write_text(json.dumps(card))
    return path
