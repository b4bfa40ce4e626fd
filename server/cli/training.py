"""`train`, `evaluate` and `data fetch`: making a model and measuring it, on the public data sets too."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from moderation import registry
from moderation.classifier import ModerationModel
from moderation.data import DataError, Example, public_sets, with_own_corpus
from moderation.training import DEFAULT_FOLDS
from moderation.training import train as train_model
from server.cli import common
from server.settings import Settings


@click.command()
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder with the public data sets (see docs/models.md); the own corpus is always used.",
)
@click.option("--activate/--no-activate", default=True, show_default=True, help="Make the new version active.")
@click.option(
    "--folds",
    type=click.IntRange(min=2),
    default=DEFAULT_FOLDS,
    show_default=True,
    help="Fold models whose scores choose the thresholds; fewer train faster and choose less steadily.",
)
@click.pass_context
def train(ctx: click.Context, data_dir: Path | None, activate: bool, folds: int) -> None:
    """Train both classifiers and register a new model version."""
    settings = common.settings(ctx)
    version = train_and_register(settings, data_dir, activate=activate, folds=folds)
    click.echo(f"registered model {version}" + (" (active)" if activate else ""))


def train_and_register(
    settings: Settings, data_dir: Path | None, activate: bool = True, folds: int = DEFAULT_FOLDS
) -> str:
    """Train on the corpus, DATA_DIR's public sets and the moderators' labels; register the version."""
    from moderation.learning import moderator_examples

    sessions = common.sessions(settings, create=True)
    common.check_writable_folder(settings.effective_model_dir, "MODEL_DIR")  # now, not after minutes of training
    try:
        public = public_sets(data_dir)
        examples = with_own_corpus(public)
    except (DataError, OSError) as error:
        raise click.ClickException(str(error)) from None
    if data_dir is not None:
        _say_what_was_found({name: len(found) for name, found in public.items()}, data_dir)
    with sessions() as session:
        labels = moderator_examples(session)
    examples += labels
    # Said with the public sets, before the long training: "none" from a database expected to hold verdicts
    # means the wrong DATABASE_URL or VAR_DIR.
    click.echo(f"moderators' labels from the database: {f'{len(labels):,}' if labels else 'none'}")
    model = train_model(examples, folds=folds)  # no session is open during the long CPU work
    version = registry.new_version_name()
    model.card["version"] = version
    model.card["data"]["data_dir"] = str(data_dir.resolve()) if data_dir else None
    try:
        artifact = registry.save_artifact(model, settings.effective_model_dir, version)
    except OSError as error:  # checked before training, but a disk can fill up or a mount go read-only
        raise click.ClickException(f"cannot save model {version} in MODEL_DIR: {error}") from None
    with sessions.begin() as session:
        registry.register(session, version, artifact, model.card)
        if activate:
            registry.activate(session, version)
    return version


def _say_what_was_found(sizes: dict[str, int], data_dir: Path) -> None:
    """A --data-dir without any set in it is most likely a wrong path: say so before the long training."""
    found = {name: size for name, size in sizes.items() if size}
    if found:
        click.echo(f"public examples from {data_dir}: " + ", ".join(f"{k} {n:,}" for k, n in sorted(found.items())))
    empty = sorted(name for name, size in sizes.items() if not size)
    if empty:
        click.echo(f"warning: {', '.join(f'{name}/' for name in empty)} in {data_dir} held no examples", err=True)
    if not found:
        _warn_no_public_sets(data_dir, "training on the shipped corpus and the moderators' labels only")


def _warn_no_public_sets(data_dir: Path, instead: str) -> None:
    """A --data-dir without any set in it is most likely a wrong path."""
    from moderation.data import PUBLIC_LOADERS

    folders = ", ".join(f"{name}/" for name in PUBLIC_LOADERS)
    click.echo(f"warning: no public data set in {data_dir} (looked for {folders}); {instead}", err=True)


@click.group()
def data() -> None:
    """The public data sets."""


@data.command("fetch")
@click.option(
    "--dest",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("data"),
    show_default=True,
    help="Folder to download into (one sub-folder per data set, as the loaders expect).",
)
def data_fetch(dest: Path) -> None:
    """Download the public data sets from their public homes (needs internet access)."""
    from moderation.fetch import FetchError, fetch_all

    try:
        names = fetch_all(dest)
    except (FetchError, OSError) as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"fetched {', '.join(names)} into {dest}; train with: moderation train --data-dir {dest}")


@click.command()
@click.option(
    "--data",
    "data_file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="A labeled JSONL file (corpus/SCHEMA.md) to evaluate on instead of the held-out splits.",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Public data sets whose held-out parts join the evaluation (default: those the model used); not with --data.",
)
@click.option(
    "--report",
    "report_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Report folder (default: VAR_DIR/reports/<version>, or <version>-<file name> with --data).",
)
@click.pass_context
def evaluate(ctx: click.Context, data_file: Path | None, data_dir: Path | None, report_dir: Path | None) -> None:
    """Measure the active model on held-out data against the targets and the WordPress rule baseline.

    Comments the model was trained on are left out of every measure; a model saved before models kept a
    record of their training data cannot tell which those are, and the output says so.
    """
    from moderation.report import (
        LABEL_HEADERS,
        POLICY_HEADERS,
        EvaluationError,
        check_support,
        label_rows,
        mistakes_summary,
        policy_gaps,
        policy_rows,
        write_report,
    )
    from moderation.report import evaluate as run_evaluation

    if data_file is not None and data_dir is not None:
        raise click.UsageError(
            "--data-dir is not used with --data (the file is evaluated on its own): give one or the other", ctx
        )
    settings = common.settings(ctx)
    model = common.active_model(settings)
    report_dir = report_dir or _default_report_dir(settings, model.version, data_file)
    common.check_writable_folder(report_dir, "the report folder")  # before the work, not after it
    examples = _evaluation_examples(model, data_file, data_dir)
    try:
        result = run_evaluation(model, examples)
    except EvaluationError as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"model {model.version}: {result.coverage.summary()}")
    click.echo(_text_table(LABEL_HEADERS, label_rows(result)))
    click.echo(_text_table(POLICY_HEADERS, policy_rows(result)))
    gaps = policy_gaps(result)
    if gaps:
        click.echo(gaps)
    for check in result.checks:
        mark = "ok  " if check["met"] else "MISS"
        click.echo(
            f"{mark} {check['source']:<28} {check['measure']:<22} {check['value']:.4f} (target {check['target']})"
            f"  {check_support(check)}"
        )
    click.echo(mistakes_summary(result))
    try:
        page = write_report(result, report_dir)
    except OSError as error:
        raise click.ClickException(f"cannot write the report into {report_dir}: {error}") from None
    click.echo(f"report: {page}")


def _evaluation_examples(model: ModerationModel, data_file: Path | None, data_dir: Path | None) -> list[Example]:
    """The user's file (its comments are a site's, whatever the file is called), else the held-out splits."""
    from moderation.data import TEST
    from moderation.report import read_user_file

    try:
        if data_file is not None:
            examples = read_user_file(data_file)
        else:
            trained_dir = model.card.get("data", {}).get("data_dir")
            chosen = data_dir or (Path(trained_dir) if trained_dir and Path(trained_dir).is_dir() else None)
            public = public_sets(chosen)
            if data_dir is not None and not any(public.values()):
                _warn_no_public_sets(data_dir, "evaluating on the shipped corpus's held-out part only")
            examples = [e for e in with_own_corpus(public) if e.split == TEST]
    except (DataError, OSError) as error:
        raise click.ClickException(str(error)) from None
    if not examples:
        holds_none = f": {data_file} holds no comments (one JSON object a line)" if data_file is not None else ""
        raise click.ClickException(f"nothing to evaluate on{holds_none}")
    if not any(e.spam is not None or e.medical_advice is not None for e in examples):
        raise click.ClickException(
            f"no labeled comments in {data_file or 'the held-out data'}: a line needs 'spam' or "
            "'medical_advice' (true or false)"
        )
    return examples


def _default_report_dir(settings: Settings, version: str, data_file: Path | None) -> Path:
    """The held-out data's report per version; another file's report beside it, never over it."""
    name = version if data_file is None else f"{version}-{data_file.stem}"
    return settings.var_dir / "reports" / name


def _text_table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [[h for h in headers]] + [
        ["-" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v) for v in r] for r in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join("  ".join(value.ljust(width) for value, width in zip(row, widths, strict=True)) for row in cells)
