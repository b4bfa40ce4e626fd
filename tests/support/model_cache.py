"""The session's test model, kept between runs in pytest's cache under the digest of what it is trained from.

The digest covers the shipped corpus, every module of ``moderation`` (features, cues, training, ...) and the
versions of Python and the numeric libraries, and the training arguments: change any of them and the next run
trains afresh. A cached file is copied into the session's own folder (tests may move or delete the artifact
they are given) and loaded as the service loads models: its checksum against the one recorded when it was
stored, and its types against the trusted ones.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import platform
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
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


def training_inputs_digest(training: Mapping[str, Any]) -> str:
    """Of the corpus, the moderation package's code, the library versions and ``training``'s arguments."""
    digest = hashlib.sha256()
    versions = (platform.python_version(), sklearn.__version__, np.__version__, scipy.__version__, skops.__version__)
    digest.update(repr((versions, sorted(training.items()))).encode())
    code_dir = Path(moderation.__file__).parent
    for path in sorted([*CORPUS_DIR.rglob("*.jsonl"), *code_dir.glob("*.py")]):
        digest.update(str(path.relative_to(code_dir)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:32]


class ModelCache:
    """Best effort: without a folder (pytest's cache plugin off), or with anything wrong in it, the session
    trains as it would without a cache."""

    def __init__(self, folder: Path | None, training: Mapping[str, Any]) -> None:
        self.folder = folder
        self.key = training_inputs_digest(training)

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Held while a process looks for the model and, finding none, trains and stores it: the test
        processes of one run (pytest-xdist) then train once, the others waiting to load what it stored."""
        if self.folder is None:
            yield
            return
        with contextlib.ExitStack() as held:
            try:
                lock = held.enter_context(open(self.folder.with_name(f"{self.folder.name}.lock"), "a"))
                fcntl.flock(lock, fcntl.LOCK_EX)  # let go when the file closes, or the process dies
            except OSError:  # a cache another user made, or a file system without locks: each may train
                pass
            yield

    def _file(self, suffix: str) -> Path:
        assert self.folder is not None
        return self.folder / f"{self.key}{suffix}"

    def load(self, into: Path, version: str) -> tuple[ModerationModel, registry.SavedArtifact] | None:
        """The cached model copied into ``into`` as ``version``, its checksum the one recorded when it was
        stored; None when there is none for these inputs or it cannot be used."""
        if self.folder is None:
            return None
        path = into / f"model-{version}.skops"
        try:
            sha256 = self._file(".sha256").read_text().strip()
            card: dict[str, Any] = json.loads(self._file(".card.json").read_text())
            shutil.copyfile(self._file(".skops"), path)
            shutil.copyfile(self._file(".card.json"), into / f"model-{version}.card.json")
            return registry.load_artifact(path, sha256, card), registry.SavedArtifact(path, sha256)
        except Exception:  # missing, half-removed by another run, damaged: training again mends it
            return None

    def store(self, artifact: registry.SavedArtifact) -> None:
        """Keep this artifact, and only it (older digests go). Each file appears whole (written, then renamed),
        the model last, so a run starting meanwhile finds all three or trains."""
        if self.folder is None:
            return
        card = artifact.path.with_name(artifact.path.name.removesuffix(".skops") + ".card.json")
        try:
            for old in self.folder.glob("*"):
                old.unlink(missing_ok=True)
            self._write(".card.json", card.read_bytes())
            self._write(".sha256", artifact.sha256.encode())
            self._write(".skops", artifact.path.read_bytes())
        except OSError:  # another run clearing the folder at the same moment: the next run stores it
            return

    def _write(self, suffix: str, content: bytes) -> None:
        target = self._file(suffix)
        partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
        partial.write_bytes(content)
        os.replace(partial, target)
