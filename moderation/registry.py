"""The model registry: skops artifacts with a checksum on disk, one database row per version.

Loading trusts only the reviewed list of types below: a file that asks for anything else is refused.
A version's file is looked for by name in the loading process's model folder (MODEL_DIR) first, then at
the path it was saved to: hosts, restored backups and volumes see the shared folder under other paths.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import skops.io as sio
from sqlalchemy import event, func, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, SessionTransaction

from models.entities import ModelVersion
from moderation.classifier import LABELS, ModerationModel
from moderation.features import FEATURES_VERSION
from moderation.policy import Thresholds

log = logging.getLogger(__name__)

# Every type a saved ModerationModel holds, reviewed: standard scikit-learn, NumPy and SciPy parts only.
TRUSTED_TYPES = [
    "builtins.dict",
    "builtins.list",
    "builtins.tuple",
    "builtins.str",
    "builtins.float",
    "builtins.int",
    "builtins.bool",
    "collections.OrderedDict",
    "numpy.dtype",
    "numpy.float32",
    "numpy.float64",
    "numpy.int32",
    "numpy.int64",
    "numpy.ndarray",
    "scipy.sparse._csr.csr_matrix",
    "sklearn.calibration.CalibratedClassifierCV",
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    "sklearn.feature_extraction.text.HashingVectorizer",
    "sklearn.feature_extraction.text.TfidfTransformer",
    "sklearn.linear_model._logistic.LogisticRegression",
    "sklearn.pipeline.FeatureUnion",
    "sklearn.pipeline.Pipeline",
]


# The artifact's entry with the hashes of the training rows' texts (an ndarray of uint64: a trusted type).
FINGERPRINTS = "trained_fingerprints"


class RegistryError(RuntimeError):
    """A model version that is missing, corrupt or cannot be activated."""


@dataclass(frozen=True, slots=True)
class SavedArtifact:
    path: Path
    sha256: str


def new_version_name(now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    return now.strftime("%Y%m%d-%H%M%S-%f")


def save_artifact(model: ModerationModel, model_dir: Path, version: str) -> SavedArtifact:
    model_dir.mkdir(parents=True, exist_ok=True)
    path = model_dir / f"model-{version}.skops"
    payload: dict[str, Any] = {"vectorizer": model.vectorizer, **{label: model.classifiers[label] for label in LABELS}}
    if model.trained_fingerprints is not None:
        payload[FINGERPRINTS] = model.trained_fingerprints
    sio.dump(payload, path)
    (model_dir / f"model-{version}.card.json").write_text(json.dumps(model.card, indent=2, sort_keys=True))
    return SavedArtifact(path=path, sha256=file_sha256(path))


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_artifact(path: Path, sha256: str, card: dict[str, Any]) -> ModerationModel:
    if not path.exists():
        raise RegistryError(f"model file {path} is missing")
    verify_checksum(path, sha256)
    untrusted = sorted((types_in_artifact(path) | set(sio.get_untrusted_types(file=path))) - set(TRUSTED_TYPES))
    if untrusted:
        raise RegistryError(f"model file {path} holds types that are not trusted: {', '.join(untrusted)}")
    payload = sio.load(path, trusted=TRUSTED_TYPES)
    if card and not made_for_these_features(card):  # no card at all: a bare file, nothing to compare
        log.warning(
            "model %s was trained on features of version %s, this code makes version %s: "
            "its scores drift; train again (`moderation train`)",
            card.get("version", path.stem),
            card.get("features_version", "(unrecorded)"),
            FEATURES_VERSION,
        )
    return ModerationModel(
        vectorizer=payload["vectorizer"],
        classifiers={label: payload[label] for label in LABELS},
        card=card,
        trained_fingerprints=trained_fingerprints(payload, path),
    )


def trained_fingerprints(payload: dict[str, Any], path: Path) -> np.ndarray | None:
    """The saved record of the training rows; None in a file saved before models kept one."""
    fingerprints = payload.get(FINGERPRINTS)
    if fingerprints is None:
        return None
    if not isinstance(fingerprints, np.ndarray) or fingerprints.dtype != np.uint64 or fingerprints.ndim != 1:
        raise RegistryError(f"model file {path}: {FINGERPRINTS} is not a list of 64-bit hashes")
    return fingerprints


def locate_artifact(saved_path: str, model_dir: Path | None) -> Path:
    """The file of a registered version: its name in ``model_dir`` first, else the path it was saved to.

    The row keeps the absolute path on the host that trained, which another host, a restored backup or a
    volume mounted elsewhere does not share; the file name is what every view of the folder has in common.
    A file found in ``model_dir`` is used even if its checksum turns out wrong, so a corrupt shared copy is
    refused loudly instead of being hidden by an old copy left where the model was trained.
    """
    saved_at = Path(saved_path)
    for place in places_to_look(saved_at, model_dir):
        if place.is_file():
            return place
    raise RegistryError(f"model file {saved_at.name} is missing: {where_looked(saved_at, model_dir)}")


def places_to_look(saved_at: Path, model_dir: Path | None) -> list[Path]:
    places = [] if model_dir is None else [model_dir / saved_at.name]
    if saved_at not in places:  # saved in this very folder: one place, not the same one twice
        places.append(saved_at)
    return places


def where_looked(saved_at: Path, model_dir: Path | None) -> str:
    if model_dir is None:
        return f"not at {saved_at}"
    if model_dir / saved_at.name == saved_at:
        return f"not in MODEL_DIR {model_dir}"
    return f"not in MODEL_DIR {model_dir}, nor at {saved_at} where it was saved"


def check_intact(row: ModelVersion, model_dir: Path | None) -> Path:
    """The version's file (see `locate_artifact`), if its checksum is the one registered; else RegistryError.

    What activating needs to know before workers switch: a version whose file is gone or changed since it
    was saved would leave every process without a model. The full load is left to the processes that use it
    (it costs seconds; the checksum already proves the file is byte for byte the one that was saved).
    """
    with unreadable_as_registry_error(row.version):  # finding the file can fail so too: stat() on a stale handle
        path = locate_artifact(row.path, model_dir)
        verify_checksum(path, row.sha256)
    return path


@contextmanager
def unreadable_as_registry_error(version: str) -> Iterator[None]:
    """A model file that cannot be read (an I/O error on a shared MODEL_DIR: EIO, an NFS stale file handle,
    EACCES) is a RegistryError, as a missing one is: the classify task is put off and counted as model
    unavailable, the relay waits, `ModelStore` keeps the failure until its next check, activation refuses."""
    try:
        yield
    except OSError as error:
        raise RegistryError(f"model file of version {version} cannot be read: {error}") from error


def verify_checksum(path: Path, sha256: str) -> None:
    actual = file_sha256(path)
    if actual != sha256:
        raise RegistryError(
            f"model file {path} is not the file that was saved (corrupt or replaced): "
            f"checksum {actual}, the registry expects {sha256}"
        )


def load_version(row: ModelVersion, model_dir: Path | None) -> ModerationModel:
    with unreadable_as_registry_error(row.version):
        return load_artifact(locate_artifact(row.path, model_dir), row.sha256, dict(row.card))


def made_for_these_features(card: dict[str, Any]) -> bool:
    return card.get("features_version") == FEATURES_VERSION


def types_in_artifact(path: Path) -> set[str]:
    """Every type a skops file would build, read from its schema (skops itself trusts many types by default)."""
    try:
        with zipfile.ZipFile(path) as archive:
            schema = json.loads(archive.read("schema.json"))
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError) as error:
        raise RegistryError(f"model file {path} is not a skops file: {error}") from error
    found: set[str] = set()
    pending: list[Any] = [schema]
    while pending:
        node = pending.pop()
        if isinstance(node, dict):
            if "__module__" in node and "__class__" in node:
                found.add(f"{node['__module__']}.{node['__class__']}")
            pending.extend(node.values())
        elif isinstance(node, list):
            pending.extend(node)
    return found


def register(session: Session, version: str, artifact: SavedArtifact, card: dict[str, Any]) -> ModelVersion:
    row = ModelVersion(version=version, path=str(artifact.path), sha256=artifact.sha256, card=card)
    session.add(row)
    session.flush()
    return row


# The name `save_artifact` gives a model's file; the version column's length.
ARTIFACT_NAME = re.compile(r"model-(?P<version>.+)\.skops")
MAX_VERSION_CHARS = 64
# What a version may be called when it comes from elsewhere: it becomes a file and a report folder's name,
# and is printed into commands to copy.
VERSION_NAME = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._-]{{0,{MAX_VERSION_CHARS - 1}}}")


@dataclass(frozen=True, slots=True)
class ImportedModel:
    row: ModelVersion
    registered_now: bool  # False: this version was already registered with this very file
    copied: tuple[Path, ...]  # the files put into the model folder (none if the same ones were there)


# Taken by every import on PostgreSQL, held until its transaction ends: imports take turns across hosts.
IMPORT_LOCK_ID = 7_301_449_212_015_337_512


@contextmanager
def import_lock(model_dir: Path) -> Iterator[None]:
    """One import at a time into ``model_dir`` on this host, held until the importer's transaction has ended.

    Without it, two imports of one version race: the second finds the first's copy, skips copying and
    registers; the first's registration then fails and removes its copies, the file the second's row names.
    The lock is on the folder itself, so nothing is left in it; the system drops it if the process dies. A
    folder that refuses locks (NFS) is used without one, with a warning: on PostgreSQL ``import_artifact``
    takes a lock in the database anyway.
    """
    try:
        model_dir.mkdir(parents=True, exist_ok=True)
        folder = os.open(model_dir, os.O_RDONLY)
    except OSError as error:
        raise RegistryError(f"cannot use MODEL_DIR {model_dir}: {error}") from None
    try:
        try:
            fcntl.flock(folder, fcntl.LOCK_EX)
        except OSError as error:
            log.warning(
                "MODEL_DIR %s cannot be locked (%s): imports into it from this host are not serialized",
                model_dir,
                error,
            )
        yield
    finally:
        os.close(folder)


def check_import(path: Path, *, allow_other_features: bool = False) -> tuple[str, dict[str, Any]]:
    """The version and card of a model file to import, checked before anything is locked or created (a typo
    or a bad card changes nothing): a ``model-<version>.skops`` that exists, its card beside it naming that
    version with valid thresholds, made for this code's features unless ``allow_other_features``."""
    if not path.is_file():  # first: a path that names nothing is a typo, whatever the name looks like
        raise RegistryError(f"model file {path} is missing" if not path.exists() else f"{path} is not a file")
    match = ARTIFACT_NAME.fullmatch(path.name)
    if match is None:
        raise RegistryError(f"{path} is not a model file: its name must be model-<version>.skops")
    card_path = path.with_name(f"model-{match['version']}.card.json")
    card = read_card(card_path)
    version = card.get("version")
    if version is None:  # a card without one: the name the file was saved under
        version = match["version"]
    if not isinstance(version, str) or not VERSION_NAME.fullmatch(version):
        raise RegistryError(
            f"model card {card_path}: version {version!r} is not a name of 1 to {MAX_VERSION_CHARS} letters, "
            "digits, '.', '_' or '-'"
        )
    if version != match["version"]:  # the file is found by its name: model-<version>.skops
        raise RegistryError(f"model card {card_path} names version {version}, the file's name {match['version']}")
    check_thresholds(card, card_path)
    if not made_for_these_features(card) and not allow_other_features:
        raise RegistryError(
            f"model {version} was trained on features of version {card.get('features_version', '(unrecorded)')}, "
            f"this code makes version {FEATURES_VERSION}: its scores would drift; train it again here, or "
            "import it anyway with --allow-other-features"
        )
    return version, card


def import_artifact(
    session: Session, path: Path, model_dir: Path, *, allow_other_features: bool = False
) -> ImportedModel:
    """Register a model file saved by another install (``model-<version>.skops`` with its card beside it).

    The file is checked as loading checks it (every type trusted, it loads as a model) and must be made for
    this code's features unless ``allow_other_features``; then it and its card are copied into ``model_dir``
    under the same names (never over a different file) and the copy is registered. A version already
    registered with the same checksum is not registered again; with another checksum it is refused.
    The copies live and die with ``session``'s transaction: removed again if it does not commit. On
    PostgreSQL imports take turns through a lock held until that transaction ends; on SQLite hold
    ``import_lock(model_dir)`` around the whole transaction when other imports may run at the same time.
    """
    version, card = check_import(path, allow_other_features=allow_other_features)
    card_path = path.with_name(f"model-{version}.card.json")
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(func.pg_advisory_xact_lock(IMPORT_LOCK_ID)))
    sha256 = file_sha256(path)
    registered = session.scalar(select(ModelVersion).where(ModelVersion.version == version))
    if registered is not None and registered.sha256 != sha256:
        raise RegistryError(
            f"model version {version} is already registered with another file (checksum {registered.sha256}, "
            f"this one's is {sha256}): not imported"
        )
    check_loads(path, sha256, card)
    copied = copy_into(model_dir, [path, card_path])
    remove_unless_committed(session, copied)
    target = model_dir / path.name
    try:
        copy_sha256 = file_sha256(target)
        if copy_sha256 != sha256:
            raise RegistryError(f"model file {path} changed while it was being imported: not imported")
        if registered is not None:
            return ImportedModel(registered, registered_now=False, copied=copied)
        row = register(session, version, SavedArtifact(target, copy_sha256), {**card, "version": version})
        trained = _card_time(card)
        if trained is not None:  # when it was made, as in the install it comes from, not when it was imported
            row.created_at = trained
    except SQLAlchemyError as error:
        remove(copied)
        reason = str(getattr(error, "orig", None) or error).splitlines()[0]
        raise RegistryError(f"model version {version} could not be registered: {reason}") from error
    except BaseException:
        remove(copied)
        raise
    return ImportedModel(row, registered_now=True, copied=copied)


def _card_time(card: dict[str, Any]) -> datetime | None:
    try:
        made = datetime.fromisoformat(str(card["created_at"]))
    except (KeyError, ValueError):
        return None
    return made if made.tzinfo is not None else made.replace(tzinfo=UTC)


def check_thresholds(card: dict[str, Any], card_path: Path) -> None:
    """Every classify task builds the policy from these: a card without them, or with ones the policy refuses,
    would make a model that decides nothing (or one that falls back to defaults far from its own)."""
    try:
        Thresholds(**card["thresholds"])
    except (KeyError, TypeError, ValueError) as error:
        raise RegistryError(f"model card {card_path}: no usable thresholds ({type(error).__name__}: {error})") from None


def read_card(card_path: Path) -> dict[str, Any]:
    """The model card saved beside a model file: required to import it, and a JSON object."""
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RegistryError(f"model card {card_path} is missing: a model file is imported with its card") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RegistryError(f"model card {card_path} is not a JSON object: {error}") from None
    if not isinstance(card, dict):
        raise RegistryError(f"model card {card_path} is not a JSON object")
    return card


def check_loads(path: Path, sha256: str, card: dict[str, Any]) -> None:
    """What a worker will do with the file, done now: `load_artifact` (trusted types only), then a model."""
    try:
        load_artifact(path, sha256, card)
    except RegistryError:
        raise
    except Exception as error:  # whatever skops or the payload's shape raises: not a model
        raise RegistryError(
            f"model file {path} does not load as a model: {type(error).__name__}: {error}".splitlines()[0]
        ) from None


def copy_into(model_dir: Path, sources: list[Path]) -> tuple[Path, ...]:
    """Copy each file into ``model_dir`` under its name, unless the same file is there; the copies made.

    A different file of that name is never overwritten: refused before anything is copied, and the copies
    are made with exclusive creation, so one that appears meanwhile is not overwritten either.
    """
    to_copy = []
    for source in sources:
        target = model_dir / source.name
        if target.exists():
            if file_sha256(target) != file_sha256(source):
                raise RegistryError(
                    f"MODEL_DIR {model_dir} already holds a different {target.name}: it is not overwritten; "
                    "move it away or import under another version name"
                )
            continue
        to_copy.append((source, target))
    copied: list[Path] = []
    try:
        model_dir.mkdir(parents=True, exist_ok=True)
        for source, target in to_copy:
            with source.open("rb") as reading, target.open("xb") as writing:
                copied.append(target)
                shutil.copyfileobj(reading, writing)
    except OSError as error:
        remove(copied)
        raise RegistryError(f"cannot copy the model into MODEL_DIR {model_dir}: {error}") from None
    except BaseException:
        remove(copied)
        raise
    return tuple(copied)


def remove(paths: tuple[Path, ...] | list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


def remove_unless_committed(session: Session, paths: tuple[Path, ...]) -> None:
    """Remove ``paths`` again when ``session``'s current transaction ends without committing (a rollback,
    an error at commit, a session closed without a commit): no copied file without its registration."""
    root = session.get_transaction()
    if not paths or root is None:
        return
    committed = False

    def on_commit(_session: Session) -> None:
        nonlocal committed
        # after_commit fires for savepoints too: only the outermost transaction's commit keeps the files.
        if session.get_transaction() is root and session.get_nested_transaction() is None:
            committed = True

    def on_end(_session: Session, transaction: SessionTransaction) -> None:
        if transaction is root and not committed:
            remove(paths)

    event.listen(session, "after_commit", on_commit)
    event.listen(session, "after_transaction_end", on_end)


def list_versions(session: Session) -> list[ModelVersion]:
    return list(session.scalars(select(ModelVersion).order_by(ModelVersion.created_at.desc(), ModelVersion.id.desc())))


def active_version(session: Session, *, lock: bool = False) -> ModelVersion | None:
    """The active version; with ``lock``, its row locked (FOR UPDATE, on PostgreSQL) until the transaction ends,
    so that no activation or rollback replaces it meanwhile (both update that row). A change being committed
    meanwhile is waited for, and then reads as no version active: callers comparing take that as a change."""
    query = select(ModelVersion).where(ModelVersion.is_active)
    if lock:
        query = query.with_for_update().execution_options(populate_existing=True)
    return session.scalar(query)


def activate(
    session: Session, version: str, now: datetime | None = None, *, model_dir: Path | None = None
) -> ModelVersion:
    """Make ``version`` the active one, if its file is intact in ``model_dir`` (the caller's MODEL_DIR) or where
    saved: see `check_intact`."""
    # No version holds a NUL (PostgreSQL text cannot), and PostgreSQL refuses to compare with one: not asked.
    row = None if "\x00" in version else session.scalar(select(ModelVersion).where(ModelVersion.version == version))
    if row is None:
        raise RegistryError(f"no model version {version!r}")
    try:
        check_intact(row, model_dir)
    except RegistryError as unloadable:
        raise RegistryError(f"model version {version} cannot be activated: {unloadable}") from None
    if row.is_active:  # its activation time is history that `rollback` reads: nothing happened to it
        return row
    session.execute(update(ModelVersion).where(ModelVersion.is_active).values(is_active=False))
    row.is_active = True
    row.activated_at = now or datetime.now(UTC)
    session.flush()
    return row


def rollback(session: Session, *, model_dir: Path | None = None) -> ModelVersion:
    """Activate the version that was active before the current one, if its file is intact (as `activate`).

    A previous version whose file is missing or corrupt is refused rather than skipped: the operator asked
    for that version, and stepping further back without being asked could bring back a much older model.
    """
    current = active_version(session)
    earlier = select(ModelVersion).where(ModelVersion.activated_at.is_not(None))
    if current is not None and current.activated_at is not None:
        earlier = earlier.where(ModelVersion.id != current.id, ModelVersion.activated_at < current.activated_at)
    previous = session.scalar(earlier.order_by(ModelVersion.activated_at.desc()).limit(1))
    if previous is None:
        raise RegistryError("there is no earlier active version to roll back to")
    try:
        check_intact(previous, model_dir)
    except RegistryError as unloadable:
        staying = f"model {current.version} stays active" if current is not None else "no model is active"
        raise RegistryError(f"cannot roll back to model version {previous.version}: {unloadable}; {staying}") from None
    # The rolled-back version leaves the activation history, so a second rollback steps further back.
    session.execute(update(ModelVersion).where(ModelVersion.is_active).values(is_active=False, activated_at=None))
    previous.is_active = True
    session.flush()
    return previous


class ModelStore:
    """The active model for a long-running process, reloaded when another version is activated.

    The database is asked which version is active at most every ``check_interval`` seconds, so
    workers pick up an activation without a restart and without a query per comment. Files are looked
    for in ``model_dir`` (this process's MODEL_DIR) first: see `locate_artifact`.
    """

    def __init__(
        self, session_factory: Callable[[], Session], check_interval: float = 10.0, model_dir: Path | None = None
    ) -> None:
        self._session_factory = session_factory
        self._check_interval = check_interval
        self.model_dir = model_dir
        self._lock = threading.Lock()
        self._model: ModerationModel | None = None
        self._load_failure: RegistryError | None = None  # why the active version could not be loaded, until next check
        self._checked_at = float("-inf")

    def current(self) -> ModerationModel:
        with self._lock:
            due = time.monotonic() - self._checked_at >= self._check_interval
            if due or (self._model is None and self._load_failure is None):
                self._refresh()
            if self._model is None:
                raise self._load_failure or RegistryError("no model is active: run `moderation train`")
            return self._model

    def _refresh(self) -> None:
        with self._session_factory() as session:
            row = active_version(session)
            self._checked_at = time.monotonic()
            self._load_failure = None
            if row is None:
                self._model = None
                return
            if self._model is not None and self._model.version == row.version:
                return
            # Another version is active now: the one loaded is not used again even when the new one cannot be
            # loaded (its file missing from this host's MODEL_DIR, or altered). Comments then wait, as in a
            # process that never had a model, rather than being decided by a version no longer active.
            self._model = None
            try:
                self._model = load_version(row, self.model_dir)
            except RegistryError as failure:
                self._load_failure = failure
