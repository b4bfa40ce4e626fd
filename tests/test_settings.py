"""Settings that cannot work stop every command at start with one line naming them (never showing a secret),
and a database that cannot be used is one line too, whichever command found out."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from gunicorn.errors import AppImportError
from sqlalchemy.engine import make_url

from server.cli import main
from server.factory import session_secret, warn_if_session_key_is_per_host
from server.settings import Settings
from server.wsgi import create_wsgi_app
from tests.support.processes import start_web, wait_until
from tests.support.services import POSTGRES_ADMIN_URL, free_port, postgres_reachable

# Nothing listens on port 1: the connection is refused at once.
REFUSED_DATABASE = "postgresql+psycopg://moderation:s3cret-pw@127.0.0.1:1/moderation"
REFUSED_DATABASE_SHOWN = "postgresql+psycopg://moderation:***@127.0.0.1:1/moderation"
LIMITS_EXAMPLE = "write e.g. 1200/minute, 50/second, or 10/minute;100/hour for two limits"


def run(var_dir: Path, *args: str, **env: str) -> Result:
    base = {"VAR_DIR": str(var_dir), "DATABASE_URL": "", "LOG_FORMAT": "text", "LOG_LEVEL": "WARNING"}
    return CliRunner().invoke(main, list(args), env=base | env, catch_exceptions=False)


# --- settings refused at start -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("REDIS_URL", "localhost:6379", "must be a redis:// or rediss:// (TLS) URL, e.g. redis://127.0.0.1:6379/0"),
        ("REDIS_URL", "amqp://guest@localhost//", "must be a redis:// or rediss:// (TLS) URL"),
        ("REDIS_URL", "redis://localhost:63x9/0", "must be a redis:// or rediss:// (TLS) URL"),
        ("RATE_LIMIT_PER_SITE", "lots", f"'lots' is not a rate limit in limits syntax; {LIMITS_EXAMPLE}"),
        ("RATE_LIMIT_PER_AUTHOR_IP", "20/fortnight", "'20/fortnight' is not a rate limit in limits syntax"),
        ("LOGIN_RATE_LIMIT", "ten a minute", "'ten a minute' is not a rate limit in limits syntax"),
        ("DATABASE_URL", "localhost/moderation", "not a URL SQLAlchemy can read; e.g. postgresql+psycopg://"),
        ("DATABASE_URL", "mysql://u:pw@localhost/y", "mysql://u:***@localhost/y: this service runs on PostgreSQL or"),
        ("DATABASE_URL", "postgresql+asyncpg://u@h/m", "postgresql+asyncpg://u@h/m: 'postgresql+asyncpg' is an"),
        ("DATABASE_URL", "postgresql+pg8000://u@h/m", "postgresql+pg8000://u@h/m: its driver 'postgresql+pg8000'"),
        ("LOG_LEVEL", "VERBOSE", "Input should be 'DEBUG', 'INFO', 'WARNING', 'ERROR' or 'CRITICAL'"),
        ("PUBLIC_URL", "moderation.example.org", "must be an http:// or https:// base URL, e.g. https://"),
        ("PUBLIC_URL", "https://moderation.example.org/?x=1", "must be an http:// or https:// base URL"),
        ("PUBLIC_URL", "https://moderation.example.org?", "must be an http:// or https:// base URL"),
        ("PUBLIC_URL", "https://moderation.example.org#", "must be an http:// or https:// base URL"),
        ("PUBLIC_URL", "https://moderation.example.org:abc", "must be an http:// or https:// base URL"),
        ("PUBLIC_URL", "ftp://moderation.example.org", "must be an http:// or https:// base URL"),
    ],
)
def test_a_setting_that_cannot_work_stops_any_command_with_one_line(
    tmp_path: Path, name: str, value: str, expected: str
) -> None:
    result = run(tmp_path, "sites", "list", **{name: value})
    assert result.exit_code == 1
    [line] = result.stderr.splitlines()
    assert line.startswith(f"Error: invalid setting {name}: {expected}")


@pytest.mark.parametrize(
    ("given", "level"),
    [(" debug", "DEBUG"), ("critical", "CRITICAL"), ("warn", "WARNING"), ("Fatal", "CRITICAL"), ("", "INFO")],
)
def test_the_log_level_is_read_in_any_case_with_pythons_other_names(
    monkeypatch: pytest.MonkeyPatch, given: str, level: str
) -> None:
    monkeypatch.setenv("LOG_LEVEL", given)
    assert Settings().log_level == level


@pytest.mark.parametrize(
    "given", ["https://moderation.example.org/", " https://example.org/moderation", "http://127.0.0.1:8000"]
)
def test_a_base_url_may_have_a_path_a_port_and_a_final_slash(monkeypatch: pytest.MonkeyPatch, given: str) -> None:
    monkeypatch.setenv("PUBLIC_URL", given)
    assert Settings().public_url == given.strip()


def test_a_retry_cap_below_the_first_delay_is_refused_only_when_it_was_set(tmp_path: Path) -> None:
    refused = run(tmp_path, "sites", "list", CALLBACK_RETRY_MAX_SECONDS="1")
    assert refused.exit_code == 1
    assert refused.stderr == (
        "Error: invalid settings: CALLBACK_RETRY_MAX_SECONDS (1) is less than CALLBACK_RETRY_BASE_SECONDS (30): "
        "the cap on one retry's delay cannot be below the first delay\n"
    )
    # A first delay above the default cap (6 h) is capped by it, as before there was a check.
    assert run(tmp_path, "migrate", CALLBACK_RETRY_BASE_SECONDS="30000").exit_code == 0


@pytest.mark.parametrize("value", ["", "  "])
def test_an_empty_host_is_the_default_never_every_interface(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    """gunicorn binds ":8000" (an empty host) on every interface: `HOST=` in an env file must not mean that."""
    monkeypatch.setenv("HOST", value)
    assert Settings().host == "127.0.0.1"


def test_a_database_url_naming_an_unknown_database_hides_the_password(tmp_path: Path) -> None:
    result = run(tmp_path, "migrate", DATABASE_URL="postgres://moderation:s3cret-pw@db.internal/moderation")
    assert result.exit_code == 1
    assert result.stderr == (
        "Error: invalid setting DATABASE_URL: postgres://moderation:***@db.internal/moderation names no database "
        "SQLAlchemy knows ('postgres'); e.g. postgresql+psycopg://user:password@host:5432/moderation\n"
    )


@pytest.mark.parametrize("length", [1, 31])
def test_a_short_secret_key_is_refused_without_showing_it(tmp_path: Path, length: int) -> None:
    key = "k" * (length - 1) + "Z"
    result = run(tmp_path, "sites", "list", SECRET_KEY=key)
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"Error: invalid setting SECRET_KEY: {length} characters, fewer than 32: generate one with "
        "`openssl rand -hex 32`, or leave it unset to have one generated into VAR_DIR/secret_key (one web host only)"
    ]
    assert key not in result.output


def test_every_wrong_setting_is_named_on_its_own_line(tmp_path: Path) -> None:
    result = run(tmp_path, "migrate", REDIS_URL="localhost:6379", RATE_LIMIT_PER_SITE="lots", PORT="eighty")
    assert result.exit_code == 1
    named = [line.split(":")[0] for line in result.stderr.removeprefix("Error: ").splitlines()]
    assert named == ["invalid setting REDIS_URL", "invalid setting PORT", "invalid setting RATE_LIMIT_PER_SITE"]


@pytest.mark.parametrize(
    "values",
    [
        {"redis_url": "redis://127.0.0.1:6379/0"},
        {"redis_url": "rediss://user:pw@redis.example:6380/1"},
        {"rate_limit_per_site": "10/minute;100/hour", "rate_limit_per_author_ip": "5 per 2 seconds"},
        {"login_rate_limit": "3/minute"},
        {"database_url": "postgresql://moderation:pw@db.internal/moderation"},
        {"database_url": "sqlite:///var/other.db"},
        {"secret_key": "k" * 32},
    ],
)
def test_values_the_service_can_use_are_accepted(values: dict[str, str]) -> None:
    settings = Settings(**values)  # type: ignore[arg-type]
    assert {name: getattr(settings, name) for name in values} == values


def test_an_empty_value_means_unset(tmp_path: Path) -> None:
    """`KEY=` in an env file: `moderation run` bundles Redis, SQLite in VAR_DIR, a key generated there."""
    settings = Settings(var_dir=tmp_path, redis_url="", database_url="", secret_key="")
    assert (settings.redis_url, settings.database_url, settings.secret_key) == (None, None, None)
    assert settings.effective_database_url == f"sqlite:///{tmp_path.resolve() / 'moderation.db'}"
    assert session_secret(settings) == (tmp_path / "secret_key").read_text().strip()


def test_a_setting_refused_under_gunicorn_is_one_message_that_stops_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """AppImportError: gunicorn prints the message and stops, instead of a traceback from every worker."""
    monkeypatch.setenv("RATE_LIMIT_PER_SITE", "lots")
    with pytest.raises(AppImportError) as raised:
        create_wsgi_app()
    assert (
        str(raised.value)
        == f"invalid setting RATE_LIMIT_PER_SITE: 'lots' is not a rate limit in limits syntax; {LIMITS_EXAMPLE}"
    )


# --- a database that cannot be used ------------------------------------------------------------------


@pytest.mark.parametrize(
    "command", [["migrate"], ["sites", "list"], ["sites", "add", "example"], ["moderators", "list"], ["run"]]
)
def test_a_refused_database_is_one_line_with_the_password_hidden(tmp_path: Path, command: list[str]) -> None:
    result = run(tmp_path, *command, DATABASE_URL=REFUSED_DATABASE, PORT=str(free_port()))
    assert result.exit_code == 1
    [line] = result.stderr.splitlines()
    assert line.startswith(f"Error: cannot use the database {REFUSED_DATABASE_SHOWN}: connection failed: ")
    assert "Connection refused" in line and line.endswith("(check DATABASE_URL)")
    assert "s3cret-pw" not in result.output


def test_a_missing_database_is_one_line(tmp_path: Path) -> None:
    if not postgres_reachable():
        pytest.skip("PostgreSQL is not reachable at 127.0.0.1:5432")
    url = make_url(POSTGRES_ADMIN_URL).set(database="moderation_no_such_database")
    result = run(tmp_path, "migrate", DATABASE_URL=url.render_as_string(hide_password=False))
    assert result.exit_code == 1
    [line] = result.stderr.splitlines()
    assert line.startswith(f"Error: cannot use the database {url.render_as_string(hide_password=True)}: ")
    assert 'database "moderation_no_such_database" does not exist' in line


def test_a_sqlite_file_that_cannot_be_opened_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "no-such-folder" / "moderation.db"
    result = run(tmp_path, "migrate", DATABASE_URL=f"sqlite:///{path}")
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: cannot use the database sqlite:///{path}: unable to open database file (check DATABASE_URL)\n"
    )


# --- a generated session key where there may be several web hosts ----------------------------------


@pytest.mark.parametrize(
    ("database_url", "secret_key", "warned"),
    [
        ("postgresql+psycopg://moderation:pw@db.internal/moderation", None, True),
        ("postgresql+psycopg://moderation:pw@db.internal/moderation", "k" * 64, False),
        (None, None, False),  # SQLite: one host
    ],
)
def test_a_generated_key_is_a_warning_only_with_a_shared_database(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, database_url: str | None, secret_key: str | None, warned: bool
) -> None:
    settings = Settings(var_dir=tmp_path, database_url=database_url, secret_key=secret_key)
    with caplog.at_level(logging.WARNING, logger="server.factory"):
        warn_if_session_key_is_per_host(settings)
    expected = (
        f"SECRET_KEY is unset: dashboard sessions are signed with a key generated on this host into "
        f"{tmp_path.resolve() / 'secret_key'}; several web hosts need the same SECRET_KEY (generate one with: "
        "openssl rand -hex 32)"
    )
    assert [record.getMessage() for record in caplog.records] == ([expected] if warned else [])


@pytest.mark.slow
def test_web_warns_once_per_start_about_a_generated_key(tmp_path: Path, redis_server_url: str) -> None:
    """Two gunicorn workers, one warning: it comes from the process that starts them."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "REDIS_", "SECRET_KEY"))}
    env |= {
        "VAR_DIR": str(tmp_path / "var"),
        "DATABASE_URL": REFUSED_DATABASE,  # web starts without reaching its database
        "REDIS_URL": redis_server_url,
        "LOG_FORMAT": "text",
        "LOG_LEVEL": "INFO",
    }
    web, _ = start_web(env, tmp_path / "web.log", workers=2)
    try:
        wait_until(lambda: web.log().count("Booting worker with pid") == 2, timeout=30, what="both workers")
    finally:
        web.stop()
    assert web.log().count("SECRET_KEY is unset: dashboard sessions are signed with a key generated") == 1


def test_celerys_own_command_names_a_bad_setting_in_one_line(tmp_path: Path) -> None:
    """`celery -A server.celery_entry worker`, as the docs allow, stops with the same line as `moderation`."""
    import subprocess

    env = {"PATH": os.environ["PATH"], "VAR_DIR": str(tmp_path), "REDIS_URL": "localhost:6379"}
    argv = [sys.executable, "-m", "celery", "-A", "server.celery_entry", "inspect", "ping"]
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(argv, env=env, cwd=root, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode != 0
    assert "invalid setting REDIS_URL: must be a redis:// or rediss:// (TLS) URL" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg://mod:s3cr@tPart@nohost.invalid/moderation",  # an unescaped @ in the password
        "postgres://mod:s3cr@tPart@db.internal/moderation",
    ],
)
def test_a_password_with_an_unescaped_at_sign_is_never_shown(tmp_path: Path, url: str) -> None:
    result = run(tmp_path, "sites", "list", DATABASE_URL=url)
    assert result.exit_code == 1
    assert "must be URL-encoded ('%40')" in result.stderr
    assert "s3cr" not in result.output and "tPart" not in result.output


def test_a_database_failure_after_connecting_does_not_blame_the_url(tmp_path: Path) -> None:
    """A lock or a timeout mid-command is a database error, not a wrong DATABASE_URL."""
    import sqlite3

    path = tmp_path / "moderation.db"
    assert run(tmp_path, "migrate", DATABASE_URL=f"sqlite:///{path}").exit_code == 0
    holder = sqlite3.connect(path)
    holder.execute("BEGIN IMMEDIATE")  # another process writing: reads go on, other writers wait, then give up
    try:
        result = run(tmp_path, "sites", "add", "example", DATABASE_URL=f"sqlite:///{path}?timeout=0.2")
    finally:
        holder.rollback()
        holder.close()
    assert result.exit_code == 1
    [line] = result.stderr.splitlines()
    assert line.startswith("Error: database error: ") and "locked" in line
    assert "DATABASE_URL" not in line
