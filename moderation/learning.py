"""Learning from moderators: their verdicts as training examples, and when a retrained model may replace
the active one (only when it is not worse on the fixed held-out evaluation data).

The gate scores both models on the same rows: the held-out part of the data the retraining has (the own
corpus's held-out quarter, and the held-out parts of the public sets in its DATA_DIR). Comparing the two
model cards instead compared each model on the data it happened to be trained with, and skipped every
source one card lacked: a model retrained without DATA_DIR was never checked on the public sets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from models.entities import ModelVersion, TrainingLabel
from moderation import registry
from moderation.classifier import ModerationModel
from moderation.data import TEST, TRAIN, Example, collect_examples
from moderation.evaluation import metrics_by_source, not_trained_on, policy_metrics, score_examples
from moderation.features import CommentText
from moderation.policy import Thresholds
from moderation.training import DEFAULT_FOLDS, is_in_domain, train


def moderator_examples(session: Session) -> list[Example]:
    """Every moderator verdict that says something about a label; only the text is kept with it."""
    rows = session.scalars(select(TrainingLabel).order_by(TrainingLabel.id))
    return [
        Example(CommentText(body=row.body), row.spam, row.medical_advice, "moderator", TRAIN)
        for row in rows
        if row.spam is not None or row.medical_advice is not None
    ]


@dataclass(frozen=True)
class Tolerance:
    leak_rate: float = 0.005
    ordinary_held: float = 0.01
    ordinary_rejected: float = 0.002
    pr_auc: float = 0.01


# Where a card keeps the measures the gate compares; `held_out_measures` gives them the same shape.
POLICY = "policy_own_held_out"
BY_SOURCE = "held_out_by_source"


def not_worse(candidate: dict[str, Any], active: dict[str, Any], tolerance: Tolerance = Tolerance()) -> list[str]:
    """What got worse from ``active`` to ``candidate`` (empty: nothing did), given their `held_out_measures`
    on the same rows. Every source and label measured for the active model is compared: one the candidate
    has no measure for is a problem, not a pass."""
    problems = []
    new_policy, old_policy = candidate.get(POLICY, {}), active.get(POLICY, {})
    for measure in ("leak_rate", "ordinary_held", "ordinary_rejected"):
        new, old = new_policy.get(measure), old_policy.get(measure)
        if new is not None and old is not None and new > old + getattr(tolerance, measure):
            problems.append(f"{measure} {new:.4f} > {old:.4f}")
    new_sources = candidate.get(BY_SOURCE, {})
    for source, labels in active.get(BY_SOURCE, {}).items():
        for label, old in labels.items():
            if old.get("pr_auc") is None:  # one class only among these rows: nothing to rank
                continue
            new = new_sources.get(source, {}).get(label, {})
            if new.get("pr_auc") is None:
                problems.append(f"{source} {label} PR-AUC not measured for the candidate ({old['pr_auc']:.4f} before)")
            elif new["pr_auc"] < old["pr_auc"] - tolerance.pr_auc:
                problems.append(f"{source} {label} PR-AUC {new['pr_auc']:.4f} < {old['pr_auc']:.4f}")
    return problems


def held_out_measures(model: ModerationModel, held_out: Sequence[Example]) -> dict[str, Any]:
    """The model's measures on these rows, at its own thresholds, in the card's shape: the policy on the
    in-domain rows, each label per source."""
    scored = score_examples(model, held_out)
    thresholds = Thresholds.of_card(model.card)
    label_thresholds = dict(model.card.get("label_thresholds") or {})
    return {
        POLICY: policy_metrics([s for s in scored if is_in_domain(s.example)], thresholds),
        BY_SOURCE: metrics_by_source(scored, thresholds, label_thresholds),
    }


def compare_on_held_out(candidate: ModerationModel, active: ModerationModel, examples: Sequence[Example]) -> list[str]:
    """`not_worse`, both models scored on the held-out rows of the data the candidate was trained with (but
    rows whose text either model was trained on); and the sources the active model was measured on that these
    rows lack, since nothing shows it is not worse there."""
    # Rows whose text either model was trained on are left out, as the card and `evaluate` leave them out.
    held_out = not_trained_on(active, not_trained_on(candidate, [e for e in examples if e.split == TEST]))
    measured = not_worse(held_out_measures(candidate, held_out), held_out_measures(active, held_out))
    return unchecked_sources(active.card, held_out) + measured


def unchecked_sources(active_card: dict[str, Any], held_out: Sequence[Example]) -> list[str]:
    """A model retrained without DATA_DIR's public sets scores worse on them (0.953 -> 0.851 spam F1 on the
    left-out YouTube video once), and without their rows no measure here can tell: that is a problem too."""
    missing = sorted(set(active_card.get("metrics", {}).get(BY_SOURCE, {})) - {e.source for e in held_out})
    if not missing:
        return []
    return [
        f"not checked on {', '.join(missing)}: the active model was measured there, but this retraining has "
        "no such held-out data (set DATA_DIR to the public data sets)"
    ]


@dataclass(frozen=True)
class Retrained:
    version: str
    activated: bool
    problems: list[str]


def retrain(
    session_factory: Any,
    model_dir: Path,
    data_dir: Path | None,
    show_progress: bool = False,
    force: bool = False,
    folds: int = DEFAULT_FOLDS,
) -> Retrained:
    """Train on the corpus, the public sets and the moderators' labels; register; activate if not worse.

    ``folds``: out-of-fold models the thresholds are chosen from, as `moderation train --folds`.
    """
    with session_factory() as session:
        examples = collect_examples(data_dir) + moderator_examples(session)
        current = registry.active_version(session)
        active, unloadable = (None, None) if force or current is None else _load_active(current, model_dir)
    model: ModerationModel = train(examples, show_progress=show_progress, folds=folds)  # no session open meanwhile
    version = registry.new_version_name()
    model.card["version"] = version
    model.card["data"]["data_dir"] = str(data_dir.resolve()) if data_dir else None
    artifact = registry.save_artifact(model, model_dir, version)
    if unloadable is not None:
        problems = [unloadable]
    elif active is not None:
        problems = compare_on_held_out(model, active, examples)
    else:  # forced, or no model active yet: nothing to be worse than
        problems = []
    compared_with = None if force or current is None else current.version
    with session_factory.begin() as session:
        registry.register(session, version, artifact, model.card)  # on SQLite, holds the write lock from here
        if not problems and not force:
            problems = _active_changed_since(session, compared_with)
        if not problems:
            registry.activate(session, version, model_dir=model_dir)
    return Retrained(version, not problems, problems)


def _active_changed_since(session: Session, compared_with: str | None) -> list[str]:
    """A problem if the active version is no longer ``compared_with`` (the one active when training started,
    which the candidate was gated against): an operator's `models rollback` or `models activate`, or another
    retraining, during the minutes of training. The candidate was never compared with the version active now,
    and activating it would silently undo that choice. The active row is read locked (on PostgreSQL; SQLite's
    write lock is already held), so a change committed after this read waits for this transaction."""
    locked = registry.active_version(session, lock=True)
    now = locked.version if locked is not None else None
    if now == compared_with:
        return []
    before = f"model {compared_with}" if compared_with is not None else "no model"
    after = f"model {now}" if now is not None else "no model"
    return [
        f"the active version changed while training ran ({before} was active then, {after} is now): the new "
        "version was compared with the former only and was not activated; activate it with "
        "`moderation models activate` if it should serve"
    ]


def _load_active(current: ModelVersion, model_dir: Path) -> tuple[ModerationModel | None, str | None]:
    """(the active model, None), or (None, why it cannot be compared).

    An active model that cannot be loaded is not replaced automatically: with nothing to compare, "not
    worse" cannot be shown, and the file may be missing only from this worker's MODEL_DIR while web and the
    other workers serve it. An operator decides (`moderation models activate`).
    """
    try:
        return registry.load_version(current, model_dir), None
    except registry.RegistryError as error:
        return None, (
            f"the active model {current.version} cannot be loaded to compare with ({error}); "
            "the new version was not activated: activate it with `moderation models activate` if it should serve"
        )
