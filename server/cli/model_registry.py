"""`models`: the model registry (list, import, activate, roll back)."""

from __future__ import annotations

from dataclasses import fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from sqlalchemy.engine import make_url

from models.entities import ModelVersion
from moderation import registry
from moderation.policy import Thresholds
from server.cli import common


@click.group()
def models() -> None:
    """The model registry: list, import, activate, roll back."""


@models.command("list")
@click.pass_context
def models_list(ctx: click.Context) -> None:
    """Versions, newest first (* active), with their held-out metrics, creation and activation dates."""
    settings = common.settings(ctx)
    with common.sessions(settings, create=False)() as session:
        versions = registry.list_versions(session)
        if not versions:
            # On stderr: a script reading the list by lines gets none. A person may be in the wrong folder.
            where = make_url(settings.effective_database_url).render_as_string(hide_password=True)
            click.echo(
                f"no model versions in {where}: `moderation train` makes one, `moderation models import` brings one",
                err=True,
            )
        for row in versions:
            policy = row.card.get("metrics", {}).get("policy_own_held_out", {})
            marker = "*" if row.is_active else " "
            features = row.card.get("features_version", "unrecorded")
            stale = "" if registry.made_for_these_features(row.card) else " (older features: train again)"
            thresholds = _in_policy_order(row.card.get("thresholds"))
            # New columns go at the end: scripts read the first ones by position.
            click.echo(
                f"{marker} {row.version}  leak={policy.get('leak_rate')}  "
                f"ordinary_held={policy.get('ordinary_held')}  thresholds={thresholds}  "
                f"features={features}{stale}  created={_utc_minute(row.created_at)}  "
                f"own_spam_f1={_own_held_out_f1(row.card, 'spam')}  "
                f"own_advice_f1={_own_held_out_f1(row.card, 'medical_advice')}  activated={_activation(row)}"
            )


def _in_policy_order(thresholds: dict[str, float] | None) -> dict[str, float] | None:
    """The same order for every version: a card read back from PostgreSQL (JSONB) has its keys sorted."""
    if thresholds is None:
        return None
    order = [field.name for field in fields(Thresholds)]
    return dict(sorted(thresholds.items(), key=lambda item: order.index(item[0]) if item[0] in order else len(order)))


def _utc_minute(moment: datetime) -> str:
    if moment.tzinfo is None:  # SQLite hands back the stored UTC time without its zone
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%MZ")


def _own_held_out_f1(card: dict[str, Any], label: str) -> str:
    """F1 on the shipped corpus's held-out quarter, as the card recorded it at training ("-" if it did not)."""
    own = card.get("metrics", {}).get("held_out_by_source", {}).get("own", {})
    f1 = own.get(label, {}).get("f1")
    return f"{f1:.3f}" if isinstance(f1, int | float) else "-"


def _activation(row: ModelVersion) -> str:
    if row.activated_at is not None:
        return _utc_minute(row.activated_at)
    if row.is_active:
        return "yes"  # made active outside `models activate`, which records when
    # Never, or rolled back from: the registry clears a version's activation on a rollback, so the two look
    # alike. One word, so that the column splits on spaces like the others.
    return "no"


@models.command("activate")
@click.argument("version")
@click.pass_context
def models_activate(ctx: click.Context, version: str) -> None:
    """Make VERSION (as `models list` names it) the one every worker scores with; its file is checked first."""
    settings = common.settings(ctx)
    with common.sessions(settings, create=False).begin() as session:
        active = registry.active_version(session)
        if active is not None and active.version == version:
            click.echo(f"model {version} is already active; nothing changed")
            return
        try:
            registry.activate(session, version, model_dir=settings.effective_model_dir)
        except registry.RegistryError as error:
            raise click.ClickException(str(error)) from None
    click.echo(f"model {version} is active; workers switch within MODEL_CHECK_INTERVAL_SECONDS")


@models.command("rollback")
@click.pass_context
def models_rollback(ctx: click.Context) -> None:
    """Go back to the version that was active before the current one (again: one further back)."""
    settings = common.settings(ctx)
    with common.sessions(settings, create=False).begin() as session:
        try:
            # The same check as `models activate`: the file, in this command's MODEL_DIR first, is intact.
            row = registry.rollback(session, model_dir=settings.effective_model_dir)
        except registry.RegistryError as error:
            raise click.ClickException(str(error)) from None
        click.echo(f"rolled back: model {row.version} is active")


@models.command("import")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--activate", is_flag=True, help="Make the imported version active.")
@click.option(
    "--allow-other-features",
    is_flag=True,
    help="Import a model trained on another version's features (its scores drift: train again soon).",
)
@click.pass_context
def models_import(ctx: click.Context, path: Path, activate: bool, allow_other_features: bool) -> None:
    """Register a model-VERSION.skops saved by another install (its card beside it), copied into MODEL_DIR."""
    settings = common.settings(ctx)
    model_dir = settings.effective_model_dir
    try:
        registry.check_import(path, allow_other_features=allow_other_features)  # before the lock makes MODEL_DIR
        with registry.import_lock(model_dir), common.sessions(settings, create=True).begin() as session:
            # Checked as loading checks it, copied, registered; the copies are removed if this does not commit.
            imported = registry.import_artifact(session, path, model_dir, allow_other_features=allow_other_features)
            version, was_active = imported.row.version, imported.row.is_active
            if activate:
                registry.activate(session, version, model_dir=model_dir)
    except registry.RegistryError as error:
        raise click.ClickException(str(error)) from None
    if imported.registered_now:
        click.echo(f"imported model {version} into MODEL_DIR {model_dir}")
    elif model_dir / path.name in imported.copied:
        click.echo(
            f"model {version} is already registered with this very file; its missing file is back in {model_dir}"
        )
    else:
        click.echo(f"model {version} is already registered with this very file: nothing imported")
    if activate:
        click.echo(f"model {version} is active; workers switch within MODEL_CHECK_INTERVAL_SECONDS")
    elif not was_active:
        click.echo(f"activate it with: moderation models activate {version}")
