"""Fixtures: real Redis and databases (SQLite always, PostgreSQL whenever reachable), a trained model."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from models.base import Base
from models.db import create_db_engine, make_session_factory
from models.migrate import upgrade_database
from moderation import registry
from moderation.classifier import ModerationModel
from moderation.data import load_own_corpus
from moderation.sites import create_site
from moderation.training import train
from server.factory import build_celery, create_app
from server.settings import Settings
from tests.support.migrations import empty_database
from tests.support.model_cache import ModelCache
from tests.support.services import (
    CLAIM_KEY,
    SYSTEM_REDIS,
    BundledRedis,
    RedisDatabaseClaim,
    first_redis_database_to_try,
    fresh_postgres_database,
    postgres_reachable,
    redis_reachable,
)
from workers.app import ModerationCelery


@pytest.fixture(scope="session")
def redis_claim() -> Iterator[RedisDatabaseClaim | None]:
    """This process's database on the Redis at 127.0.0.1:6379 (here and in CI): neither runs side by side on
    one machine (developers, CI) nor the processes of one run (pytest-xdist) flush or consume each other's
    queues. None when that Redis is not running, or all its test databases are held."""
    if not redis_reachable(SYSTEM_REDIS):
        yield None
        return
    claim = RedisDatabaseClaim(SYSTEM_REDIS)
    if claim.claim(first_redis_database_to_try(os.environ, os.getpid())) is None:
        print(  # a warning would be an error here (filterwarnings), and the bundled server does the job
            f"Redis databases 1-15 at {SYSTEM_REDIS} are all held by other test processes (keys "
            f"{CLAIM_KEY.format('*')} in database 0): this process uses the bundled redis-server",
            file=sys.stderr,
        )
        yield None
        return
    yield claim
    claim.release()


@pytest.fixture(scope="session")
def redis_server_url(redis_claim: RedisDatabaseClaim | None) -> Iterator[str]:
    """This process's database on the Redis at 127.0.0.1:6379 when it can have one; else the bundled
    redis-server."""
    if redis_claim is not None:
        yield f"{SYSTEM_REDIS}/{redis_claim.database}"
        return
    bundled = BundledRedis().start()
    yield bundled.url
    bundled.remove()


@pytest.fixture
def redis_url(redis_server_url: str, redis_claim: RedisDatabaseClaim | None) -> str:
    if redis_claim is not None:
        redis_claim.renew()
    redis.Redis.from_url(redis_server_url).flushdb()
    return redis_server_url


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'moderation.db'}"
        upgrade_database(url)
        yield url
        return
    if not postgres_reachable():
        pytest.skip("PostgreSQL is not reachable at 127.0.0.1:5432")
    with fresh_postgres_database() as url:
        upgrade_database(url)
        yield url


def clean_database(engine: Engine) -> None:
    with engine.begin() as connection:
        for table in reversed(Base.metadata.sorted_tables):
            connection.execute(table.delete())


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """An engine on an emptied database. Tests that run real processes need committed rows, so each
    test starts from empty tables instead of rolling back an outer transaction."""
    engine = create_db_engine(database_url)
    clean_database(engine)
    yield engine
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database that exists, with no tables: created, but `moderation migrate` never ran."""
    with empty_database(request.param, tmp_path) as url:
        yield url


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    return make_session_factory(engine)


@pytest.fixture
def celery(settings: Settings) -> Iterator[ModerationCelery]:
    """The workers' Celery app, with its runtime, for calling tasks in this process."""
    app = build_celery(settings)
    yield app
    app.runtime.sessions.kw["bind"].dispose()


@dataclass(frozen=True)
class TrainedModel:
    model: ModerationModel
    artifact: registry.SavedArtifact
    version: str


TEST_MODEL_TRAINING = {"random_state": 0, "folds": 2}


@pytest.fixture(scope="session")
def trained_model(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> TrainedModel:
    """A real model trained on the shipped corpus only (fixed random_state), once for as long as what it is
    trained from is unchanged: pytest's cache keeps it under the digest of its inputs (see
    ``tests.support.model_cache``), so a run of a few tests does not wait half a minute for training."""
    version = "test-model"
    models_dir = tmp_path_factory.mktemp("models")
    pytest_cache = getattr(request.config, "cache", None)  # None under -p no:cacheprovider
    cache = ModelCache(pytest_cache.mkdir("trained-model") if pytest_cache else None, TEST_MODEL_TRAINING)
    with cache.exclusive():
        cached = cache.load(models_dir, version)
        if cached is not None:
            model, artifact = cached
            return TrainedModel(model, artifact, version)
        model = train(load_own_corpus(), show_progress=False, **TEST_MODEL_TRAINING)
        model.card["version"] = version
        artifact = registry.save_artifact(model, models_dir, version)
        cache.store(artifact)
    return TrainedModel(model, artifact, version)


@pytest.fixture
def active_model(engine: Engine, trained_model: TrainedModel) -> TrainedModel:
    with make_session_factory(engine).begin() as session:
        registry.register(session, trained_model.version, trained_model.artifact, trained_model.model.card)
        registry.activate(session, trained_model.version)
    return trained_model


def fast_settings(database_url: str, redis_url: str, var_dir: Path) -> Settings:
    """Settings for tests: short relay and retry intervals, so recovery paths finish in seconds."""
    return Settings(
        var_dir=var_dir,
        database_url=database_url,
        redis_url=redis_url,
        secret_key="test-secret-key-" * 3,
        outbox_quiet_seconds=1,
        outbox_relay_interval_seconds=1,
        callback_retry_base_seconds=0.2,
        callback_retry_interval_seconds=0.5,
        callback_timeout_seconds=2,
        model_check_interval_seconds=0.5,
        log_format="text",
    )


@pytest.fixture
def settings(database_url: str, redis_url: str, tmp_path: Path, engine: Engine) -> Settings:
    return fast_settings(database_url, redis_url, tmp_path / "var")


@pytest.fixture
def app(settings: Settings) -> Iterator[Flask]:
    app = create_app(settings)
    app.config["TESTING"] = True
    yield app
    app.extensions["moderation"].sessions.kw["bind"].dispose()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@dataclass(frozen=True)
class SiteCredentials:
    name: str
    secret: str


@pytest.fixture
def site(engine: Engine) -> SiteCredentials:
    with make_session_factory(engine).begin() as session:
        created, secret = create_site(session, "backpain-advisor")
        return SiteCredentials(created.name, secret)
