"""The session's test model, kept between runs in pytest's cache under the digest of what it is trained from.

The digest covers the shipped corpus, every module of ``moderation`` (features, cues, training, ...) and the
versions of Python and the numeric libraries: change any of them and the next run trains afresh. A cached
file is loaded as the service loads models (checksum and trusted types), and copied into the session's own
folder, since tests may move or delete the artifact they are given.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import scipy
import sklearn
import skops

import moderation
from moderation import registry
from moderation.classifier import ModerationModel
from moderation.data import CORPUS_DIR


def training_inputs_digest() -> str:
    digest = hashlib.sha256()
    versions = (platform.python_version(), sklearn.__version__, np.__version__, scipy.__version__, skops.__version__)
    digest.update(repr(versions).encode())
    code_dir = Path(moderation.__file__).parent
    for path in sorted([*CORPUS_DIR.rglob("*.jsonl"), *code_dir.glob("*.py")]):
        digest.update(str(path.relative_to(code_dir)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:32]


class ModelCache:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.key = training_inputs_digest()

    @property
    def _model_file(self) -> Path:
        return self.folder / f"{self.key}.skops"

    @property
    def _card_file(self) -> Path:
        return self.folder / f"{self.key}.card.json"

    def load(self, into: Path, version: str) -> tuple[ModerationModel, registry.SavedArtifact] | None:
        """The cached model copied into ``into`` as ``version``; None when there is none for these inputs."""
        if not (self._model_file.exists() and self._card_file.exists()):
            return None
        path = into / f"model-{version}.skops"
        shutil.copyfile(self._model_file, path)
        shutil.copyfile(self._card_file, into / f"model-{version}.card.json")
        artifact = registry.SavedArtifact(path, registry.file_sha256(path))
        try:
            card: dict[str, Any] = json.loads(self._card_file.read_text())
            return registry.load_artifact(path, artifact.sha256, card), artifact
        except Exception:  # whatever is wrong with a cached file, training again mends it
            return None

    def store(self, artifact: registry.SavedArtifact) -> None:
        """Keep this artifact, and only it (older digests go); each file appears whole (written, then renamed),
        the model last, so a run starting meanwhile finds both files or trains."""
        for old in self.folder.glob("*"):
            old.unlink(missing_ok=True)
        card = artifact.path.with_name(artifact.path.name.removesuffix(".skops") + ".card.json")
        for source, target in ((card, self._card_file), (artifact.path, self._model_file)):
            partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
            shutil.copyfile(source, partial)
            os.replace(partial, target)
