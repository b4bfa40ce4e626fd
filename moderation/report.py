"""Evaluation of a model on held-out data, with the rule baseline beside it, written as a report folder."""

from __future__ import annotations

import html
import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from sklearn.calibration import calibration_curve
from sklearn.metrics import precision_recall_curve

from moderation.baseline import baseline_holds
from moderation.classifier import LABELS, ModerationModel
from moderation.data import Example, read_labeled_jsonl
from moderation.evaluation import (
    LABEL_THRESHOLD,
    MISTAKES_SHOWN,
    LabelMistakes,
    PolicyMistakes,
    Scored,
    f1_interval,
    label_mistakes,
    metrics_by_source,
    not_trained_on,
    policy_metrics,
    policy_mistakes,
    rate_interval,
    score_examples,
)
from moderation.policy import Thresholds

TARGETS = {
    "spam_f1": 0.95,
    "medical_advice_f1": 0.90,
    "leak_rate": 0.02,
    "ordinary_rejected": 0.005,
    "ordinary_held": 0.10,
}


# The source family of a file given to `evaluate --data`: a site's own comments whatever the file is called, so
# a file named sms.jsonl or youtube.jsonl is neither taken for that public set nor spared its targets.
USER_FILE = "file"


def read_user_file(path: Path) -> list[Example]:
    """A labeled JSONL file of the user's (corpus/SCHEMA.md), its comments under source ``file:<name>``."""
    return read_labeled_jsonl(path, f"{USER_FILE}:{path.stem}")


class EvaluationError(ValueError):
    """Nothing that can honestly be measured: every labeled comment was trained on."""


@dataclass(frozen=True, slots=True)
class Coverage:
    """How many of the comments given were measured, and how many were left out as training data."""

    given: int
    trained_on: int | None  # None: the model keeps no record of its training rows (saved before it did)

    @property
    def measured(self) -> int:
        return self.given - (self.trained_on or 0)

    def summary(self) -> str:
        if self.trained_on is None:
            return (
                f"{self.given} comments; this model was saved without a record of its training data, so it "
                "cannot tell which were trained on (measures on those would flatter it)"
            )
        if not self.trained_on:
            return f"{self.given} held-out comments (none was in this model's training data)"
        return (
            f"{self.measured} held-out comments; {self.trained_on} of {self.given} comments were in this "
            "model's training data and are left out"
        )


@dataclass
class Evaluation:
    model_version: str
    thresholds: Thresholds
    by_source: dict[str, dict[str, Any]]
    policy: dict[str, dict[str, Any]]
    baseline: dict[str, dict[str, Any]]
    checks: list[dict[str, Any]]
    scored: list[Scored]
    coverage: Coverage
    label_thresholds: dict[str, float]
    label_mistakes: dict[str, LabelMistakes]  # all of them; the report shows the worst MISTAKES_SHOWN
    policy_mistakes: PolicyMistakes

    def label_threshold(self, label: str) -> float:
        return self.label_thresholds.get(label, LABEL_THRESHOLD)

    def as_dict(self) -> dict[str, Any]:
        thresholds = {
            "spam_reject": self.thresholds.spam_reject,
            "spam_hold": self.thresholds.spam_hold,
            "advice_hold": self.thresholds.advice_hold,
        }
        return {
            "model_version": self.model_version,
            "thresholds": thresholds,
            "by_source": self.by_source,
            "policy": self.policy,
            "baseline": self.baseline,
            "targets": self.checks,
            "data": {"comments": self.coverage.given, "trained_on_left_out": self.coverage.trained_on},
        }


def baseline_metrics(examples: Sequence[Example]) -> dict[str, Any]:
    rows = [e for e in examples if e.spam is not None and e.medical_advice is not None]
    holds = [baseline_holds(e.comment) for e in rows]
    bad = [h for e, h in zip(rows, holds, strict=True) if e.spam or e.medical_advice]
    ordinary = [h for e, h in zip(rows, holds, strict=True) if not e.spam and not e.medical_advice]
    return {
        "n": len(rows),
        "leak_rate": round(1 - sum(bad) / len(bad), 4) if bad else None,
        "ordinary_rejected": 0.0 if ordinary else None,
        "ordinary_held": round(sum(ordinary) / len(ordinary), 4) if ordinary else None,
        "review_load": round(sum(holds) / len(holds), 4) if holds else None,
    }


def evaluate(model: ModerationModel, examples: Sequence[Example], group: str = "source") -> Evaluation:
    """Measure the model on ``examples``, leaving out those it was trained on (when it can tell)."""
    examples, coverage = leave_out_trained(model, examples)
    return measure(model.version, model.card, score_examples(model, examples), coverage)


def measure(version: str, card: dict[str, Any], scored: list[Scored], coverage: Coverage) -> Evaluation:
    """Every measure of the report, from the scores of a model (its card gives the thresholds)."""
    thresholds = Thresholds.of_card(card)
    label_thresholds = dict(card.get("label_thresholds") or {})
    by_source = metrics_by_source(scored, thresholds, label_thresholds)
    groups: dict[str, list[Scored]] = defaultdict(list)
    for item in scored:
        groups[item.example.source].append(item)
    policy = {source: policy_metrics(items, thresholds) for source, items in sorted(groups.items())}
    policy = {k: v for k, v in policy.items() if v["n"]}
    baseline = {source: baseline_metrics([i.example for i in items]) for source, items in sorted(groups.items())}
    baseline = {k: v for k, v in baseline.items() if v["n"]}
    checks = target_checks(by_source, policy)
    mistakes = {
        label: label_mistakes(scored, label, label_thresholds.get(label, LABEL_THRESHOLD), limit=None)
        for label in LABELS
    }
    wrong_decisions = policy_mistakes(scored, thresholds, limit=None)
    return Evaluation(
        version,
        thresholds,
        by_source,
        policy,
        baseline,
        checks,
        scored,
        coverage,
        label_thresholds,
        mistakes,
        wrong_decisions,
    )


def leave_out_trained(model: ModerationModel, examples: Sequence[Example]) -> tuple[list[Example], Coverage]:
    """The examples the model was not trained on: a score on a training row says how well it remembers."""
    if model.trained_fingerprints is None:
        return list(examples), Coverage(len(examples), None)
    kept = not_trained_on(model, examples)
    labeled = sum(_labeled(e) for e in examples)
    if labeled and not any(_labeled(e) for e in kept):
        raise EvaluationError(
            f"all {labeled} labeled comments were in the training data of model {model.version}: a score on them "
            "says how well it remembers, not how it does on new comments; evaluate on comments it was not "
            "trained on"
        )
    return kept, Coverage(len(examples), len(examples) - len(kept))


def _labeled(example: Example) -> bool:
    return example.spam is not None or example.medical_advice is not None


# DESIGN section 7 sets targets on comments: in-domain ones (own corpus, moderator labels, any file given to
# `evaluate --data`) and, for spam, the held-out YouTube video. Research prose, SMS and forum posts are
# reported only.
IN_DOMAIN_FAMILIES = ("own", "moderator", USER_FILE)


def _targeted(source: str, label: str | None = None) -> bool:
    family = source.split(":", 1)[0]
    if family in IN_DOMAIN_FAMILIES:
        return True
    return family == "youtube" and label == "spam"


def target_checks(by_source: dict[str, dict[str, Any]], policy: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    checks = []
    for source, labels in by_source.items():
        for label in (lab for lab in LABELS if _targeted(source, lab)):
            metrics = labels.get(label)
            if metrics and metrics["positives"] and metrics["positives"] < metrics["n"]:
                target = TARGETS[f"{label}_f1"]
                checks.append(
                    {
                        "source": source,
                        "measure": f"{label} F1",
                        "value": metrics["f1"],
                        "target": target,
                        "met": metrics["f1"] >= target,
                        "of": metrics["positives"],
                        "interval_95": f1_interval(metrics["confusion"]),
                    }
                )
    for source, metrics in policy.items():
        if not _targeted(source, "policy"):
            continue
        for measure in ("leak_rate", "ordinary_rejected", "ordinary_held"):
            if metrics[measure] is not None:
                count, total = metrics["counts"][measure]
                checks.append(
                    {
                        "source": source,
                        "measure": measure,
                        "value": metrics[measure],
                        "target": TARGETS[measure],
                        "met": metrics[measure] <= TARGETS[measure],
                        "count": count,
                        "of": total,
                        "interval_95": rate_interval(count, total),
                    }
                )
    return checks


def check_support(check: dict[str, Any]) -> str:
    """What a target check was measured on and its 95% interval, e.g. "26 of 986, 0.0181-0.0384"."""
    low, high = check["interval_95"]
    counted = f"{check['count']} of {check['of']}" if "count" in check else f"{check['of']} positives"
    return f"{counted}, {low:.4f}-{high:.4f}"


def write_report(evaluation: Evaluation, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.json").write_text(json.dumps(evaluation.as_dict(), indent=2))
    _save(pr_curves_figure(evaluation.scored), folder / "pr_curves.png")
    _save(calibration_figure(evaluation.scored), folder / "calibration.png")
    page = folder / "report.html"
    page.write_text(_html(evaluation))
    return page


def _label_arrays(scored: Sequence[Scored], label: str) -> tuple[np.ndarray, np.ndarray]:
    rows = [s for s in scored if s.example.label(label) is not None]
    return (np.array([bool(s.example.label(label)) for s in rows]), np.array([getattr(s.scores, label) for s in rows]))


def _by_source(scored: Sequence[Scored]) -> dict[str, list[Scored]]:
    groups: dict[str, list[Scored]] = defaultdict(list)
    for item in scored:
        groups[item.example.source].append(item)
    return dict(sorted(groups.items()))


def _plot_pr_curve(axis: Any, truth: np.ndarray, probability: np.ndarray, source: str) -> None:
    precision, recall, _ = precision_recall_curve(truth, probability)
    # Precision holds from one threshold's recall to the next: a straight line between them draws a saw-tooth
    # of values no threshold gives (scikit-learn's PrecisionRecallDisplay draws steps too).
    axis.plot(recall, precision, drawstyle="steps-post", label=f"{source} (n={len(truth)})")


def _plot_calibration_curve(axis: Any, truth: np.ndarray, probability: np.ndarray, source: str) -> None:
    observed, predicted = calibration_curve(truth, probability, n_bins=10, strategy="quantile")
    axis.plot(predicted, observed, marker="o", label=source)


def pr_curves_figure(scored: Sequence[Scored]) -> Figure:
    return _per_label_figure(scored, _plot_pr_curve, "precision-recall", ("recall", "precision"), "lower left")


def calibration_figure(scored: Sequence[Scored]) -> Figure:
    return _per_label_figure(
        scored,
        _plot_calibration_curve,
        "calibration",
        ("predicted probability", "observed frequency"),
        # Below the diagonal: the trained models' scores run low (their curves are above it, as a report of
        # theirs showed), so the upper left, where the legend was, is where the curves climb.
        "lower right",
        diagonal=True,
    )


def _per_label_figure(
    scored: Sequence[Scored],
    draw: Any,
    title: str,
    labels: tuple[str, str],
    legend: str,
    diagonal: bool = False,
) -> Figure:
    """One panel per label, one curve per source that has both classes of that label."""
    figure, axes = plt.subplots(1, len(LABELS), figsize=(11, 4.5))
    for axis, label in zip(axes, LABELS, strict=True):
        if diagonal:
            axis.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfectly calibrated")
        for source, items in _by_source(scored).items():
            truth, probability = _label_arrays(items, label)
            if 0 < truth.sum() < len(truth):
                draw(axis, truth, probability, source)
        axis.set(
            title=f"{label.replace('_', ' ')}: {title}",
            xlabel=labels[0],
            ylabel=labels[1],
            xlim=(0, 1.01),
            ylim=(0, 1.01),
        )
        axis.grid(alpha=0.3)
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=7, loc=legend)
        else:  # no source has both classes of this label: nothing to draw, and the panel says why
            axis.text(0.5, 0.5, "no source has both classes", ha="center", va="center", color="grey")
    figure.tight_layout()
    return figure


def _save(figure: Figure, path: Path) -> None:
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return html.escape(str(value))


def _table(headers: list[str], rows: list[list[Any]], css_class: str = "") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    attribute = f' class="{html.escape(css_class)}"' if css_class else ""
    return f"<table{attribute}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _policy_gaps_html(evaluation: Evaluation) -> str:
    gaps = policy_gaps(evaluation)
    return f"<p>{html.escape(gaps)}</p>" if gaps else ""


def label_rows(evaluation: Evaluation) -> list[list[Any]]:
    rows = []
    for source, labels in evaluation.by_source.items():
        for label, m in labels.items():
            c = m["confusion"]
            rows.append(
                [
                    source,
                    label,
                    m["n"],
                    m["positives"],
                    *_defined_rates(m),
                    m["pr_auc"],
                    f"tn {c['tn']} fp {c['fp']} fn {c['fn']} tp {c['tp']}",
                ]
            )
    return rows


def _defined_rates(metrics: dict[str, Any]) -> tuple[float | None, float | None, float | None]:
    """Precision, recall and F1, None (shown "-") where they are undefined rather than zero: recall and F1
    without a single positive, precision without a single comment predicted positive."""
    confusion = metrics["confusion"]
    if not metrics["positives"]:
        return None, None, None
    precision = metrics["precision"] if confusion["tp"] + confusion["fp"] else None
    return precision, metrics["recall"], metrics["f1"]


POLICY_NEEDS_BOTH = (
    "the policy measures need comments labeled for both spam and medical advice (a comment is ordinary only "
    "when it is known to be neither, and leaked only when it is known to be one)"
)


def policy_gaps(evaluation: Evaluation) -> str | None:
    """Why sources are missing from the policy table, or None when none is."""
    missing = [source for source in evaluation.by_source if source not in evaluation.policy]
    if not missing:
        return None
    if not evaluation.policy:
        return f"No policy measures: no comment here carries both labels, and {POLICY_NEEDS_BOTH}."
    return (
        f"Not in the policy table: {', '.join(missing)}: no comment there carries both labels, and {POLICY_NEEDS_BOTH}."
    )


def policy_rows(evaluation: Evaluation) -> list[list[Any]]:
    rows = []
    for source, m in evaluation.policy.items():
        b = evaluation.baseline.get(source, {})
        rows.append(
            [
                source,
                m["n"],
                m["leak_rate"],
                b.get("leak_rate"),
                m["ordinary_rejected"],
                m["ordinary_held"],
                b.get("ordinary_held"),
                m["review_load"],
                b.get("review_load"),
            ]
        )
    return rows


LABEL_HEADERS = ["source", "label", "n", "positives", "precision", "recall", "F1", "PR-AUC", "confusion"]
POLICY_HEADERS = [
    "source",
    "n",
    "leak",
    "leak (baseline)",
    "ordinary rejected",
    "ordinary held",
    "ordinary held (baseline)",
    "review load",
    "review load (baseline)",
]


def mistakes_summary(evaluation: Evaluation) -> str:
    """One line of how many comments each kind of mistake has (the report lists the worst of each)."""
    labels = [
        f"{label.replace('_', ' ')} {len(found.missed)} missed, {len(found.flagged)} wrongly flagged"
        for label, found in evaluation.label_mistakes.items()
    ]
    policy = evaluation.policy_mistakes
    decisions = f"policy {len(policy.leaked)} leaked, {len(policy.ordinary_rejected)} ordinary rejected"
    return f"mistakes: {'; '.join([*labels, decisions])} (the worst {MISTAKES_SHOWN} of each are in the report)"


EXCERPT_CHARS = 300


def _excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    """The comment on one line, cut to ``limit`` characters (escaped later, where it is shown)."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _labels_of(example: Example) -> str:
    found = [name for name, value in (("spam", example.spam), ("medical advice", example.medical_advice)) if value]
    return ", ".join(found) or "neither"


def _mistake_table(headers: list[str], rows: list[list[Any]]) -> str:
    return _table(headers, rows, "mistakes") if rows else "<p>None.</p>"


def _label_mistakes_html(evaluation: Evaluation) -> str:
    parts = []
    for label, found in evaluation.label_mistakes.items():
        name, line = label.replace("_", " "), evaluation.label_threshold(label)
        for kind, items, order in (
            ("missed (false negatives)", found.missed, f"lowest score first, below {line:.3f}"),
            ("wrongly flagged (false positives)", found.flagged, f"highest score first, at or above {line:.3f}"),
        ):
            shown = items[:MISTAKES_SHOWN]
            rows = [[getattr(s.scores, label), s.example.source, _excerpt(s.example.comment.body)] for s in shown]
            parts.append(
                f"<h3>{html.escape(name)}: {kind}, {len(shown)} of {len(items)}</h3><p>{order}.</p>"
                + _mistake_table(["score", "source", "comment"], rows)
            )
    return "".join(parts)


def _policy_mistakes_html(evaluation: Evaluation) -> str:
    parts = []
    found = evaluation.policy_mistakes
    for title, items in (
        ("Leaked: spam or medical advice approved (the least suspected first)", found.leaked),
        ("Ordinary comments rejected (the highest spam score first)", found.ordinary_rejected),
    ):
        shown = items[:MISTAKES_SHOWN]
        rows = [
            [
                s.scores.spam,
                s.scores.medical_advice,
                _labels_of(s.example),
                s.example.source,
                _excerpt(s.example.comment.body),
            ]
            for s in shown
        ]
        parts.append(
            f"<h3>{title}, {len(shown)} of {len(items)}</h3>"
            + _mistake_table(["spam", "medical advice", "labeled", "source", "comment"], rows)
        )
    return "".join(parts)


def _coverage_html(coverage: Coverage) -> str:
    if coverage.trained_on is None:
        return (
            f"This model was saved without a record of its training data: it cannot tell which of these "
            f"{coverage.given} comments were trained on, so none is left out and the measures may flatter it "
            "(models trained now keep that record)."
        )
    left_out = (
        f"{coverage.trained_on} of {coverage.given} comments were in this model's training data and are left out. "
        if coverage.trained_on
        else ""
    )
    held_out = f"The {coverage.measured} measured here are held out: never trained on, never used to choose thresholds."
    return left_out + held_out


def _html(evaluation: Evaluation) -> str:
    checks = [
        [c["source"], c["measure"], c["value"], c["target"], "met" if c["met"] else "NOT MET", check_support(c)]
        for c in evaluation.checks
    ]
    t = evaluation.thresholds
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Evaluation of model {html.escape(evaluation.model_version)}</title>
<style>body{{font:14px/1.45 system-ui,sans-serif;margin:2rem;max-width:1100px}}table{{border-collapse:collapse;
margin:1rem 0}}td,th{{border:1px solid #ccc;padding:.3rem .6rem;text-align:right}}td:first-child,th:first-child,
td:nth-child(2){{text-align:left}}table.mistakes td:last-child{{text-align:left;overflow-wrap:anywhere}}
img{{max-width:100%}}</style></head><body>
<h1>Model {html.escape(evaluation.model_version)}</h1>
<p>Thresholds: reject spam at {t.spam_reject:.2f}, hold spam at {t.spam_hold:.2f}, hold medical advice at
{t.advice_hold:.2f}.</p>
<p>{_coverage_html(evaluation.coverage)}</p>
<h2>Targets</h2>{_table(["source", "measure", "value", "target", "", "measured on, 95% interval"], checks)}
<p>The interval is where the value could as well have landed on another sample of the same size (Wilson for
rates, bootstrap for F1): a target inside it is neither clearly met nor clearly missed.</p>
<h2>Per label and source</h2>{_table(LABEL_HEADERS, label_rows(evaluation))}
<h2>What the policy does, beside the WordPress rule baseline</h2>
<p>Baseline: hold when a comment has 2 or more links or matches the moderation word list
(<code>moderation/baseline.py</code>); it never rejects.</p>{_table(POLICY_HEADERS, policy_rows(evaluation))}
{_policy_gaps_html(evaluation)}
<h2>The comments it got wrong</h2>
<p>Per label at its yes/no line (the one F1 is measured at), then what the policy decided. Comment text is
cut to {EXCERPT_CHARS} characters.</p>
{_label_mistakes_html(evaluation)}{_policy_mistakes_html(evaluation)}
<h2>Precision-recall</h2><img src="pr_curves.png" alt="precision-recall curves per label and source">
<h2>Calibration</h2><img src="calibration.png" alt="calibration curves per label and source">
</body></html>
"""
