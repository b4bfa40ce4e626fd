"""Learning from moderators: their verdicts as training examples, and when a retrained model may replace
the active one (only when it is not worse on the fixed held-out evaluation data)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from models.entities import TrainingLabel
from moderation import registry
from moderation.classifier import ModerationModel
from moderation.data import TRAIN, Example, collect_examples
from moderation.features import CommentText
from moderation.training import train


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


def not_worse(candidate: dict[str, Any], active: dict[str, Any], tolerance: Tolerance = Tolerance()) -> list[str]:
    """Why the candidate card is worse than the active one on the fixed held-out data (empty: it is not)."""
    problems = []
    new_policy = candidate.get("metrics", {}).get("policy_own_held_out", {})
    old_policy = active.get("metrics", {}).get("policy_own_held_out", {})
    for measure in ("leak_rate", "ordinary_held", "ordinary_rejected"):
        new, old = new_policy.get(measure), old_policy.get(measure)
        if new is not None and old is not None and new > old + getattr(tolerance, measure):
            problems.append(f"{measure} {new:.4f} > {old:.4f}")
    new_sources = candidate.get("metrics", {}).get("held_out_by_source", {})
    old_sources = active.get("metrics", {}).get("held_out_by_source", {})
    for source, labels in old_sources.items():
        for label, old in labels.items():
            new = new_sources.get(source, {}).get(label, {})
            if (
                old.get("pr_auc") is not None
                and new.get("pr_auc") is not None
                and new["pr_auc"] < old["pr_auc"] - tolerance.pr_auc
            ):
                problems.append(f"{source} {label} PR-AUC {new['pr_auc']:.4f} < {old['pr_auc']:.4f}")
    return problems


@dataclass(frozen=True)
class Retrained:
    version: str
    activated: bool
    problems: list[str]


def retrain(
    session_factory: Any, model_dir: Path, data_dir: Path | None, show_progress: bool = False, force: bool = False
) -> Retrained:
    """Train on the corpus, the public sets and the moderators' labels; register; activate if not worse."""
    with session_factory() as session:
        examples = collect_examples(data_dir) + moderator_examples(session)
        current = registry.active_version(session)
        active_card = dict(current.card) if current is not None else None
    model: ModerationModel = train(examples, show_progress=show_progress)  # no session open meanwhile
    version = registry.new_version_name()
    model.card["version"] = version
    model.card["data"]["data_dir"] = str(data_dir.resolve()) if data_dir else None
    artifact = registry.save_artifact(model, model_dir, version)
    problems = [] if force or active_card is None else not_worse(model.card, active_card)
    with session_factory.begin() as session:
        registry.register(session, version, artifact, model.card)
        if not problems:
            registry.activate(session, version)
    return Retrained(version, not problems, problems)
