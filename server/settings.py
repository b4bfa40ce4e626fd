"""Every setting, read from the environment once, with the defaults documented in docs/reference.md."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from limits import parse_many
from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

DEFAULT_HOST = "127.0.0.1"  # web on this machine only: the network is opted into
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
# The broker URL goes to Celery (kombu), the rate limits (limits) and redis-py: these two schemes are the
# ones all three read (for a Unix socket each of them wants a scheme of its own).
REDIS_SCHEMES = ("redis", "rediss")
DATABASE_URL_EXAMPLE = "postgresql+psycopg://user:password@host:5432/moderation"
MIN_SECRET_KEY_LENGTH = 32  # the docs ask for `openssl rand -hex 32` (64 characters)
LOG_LEVEL_ALIASES = {"WARN": "WARNING", "FATAL": "CRITICAL"}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore", frozen=True)

    var_dir: Path = Field(default=Path("var"), description="Where SQLite, models and the bundled Redis live.")
    database_url: str | None = Field(default=None, description="SQLAlchemy URL; SQLite in VAR_DIR when unset.")
    redis_url: str | None = Field(default=None, description="Broker URL; `moderation run` bundles Redis when unset.")
    host: str = Field(default=DEFAULT_HOST, description="Interface web binds; 0.0.0.0 (or ::) for all.")
    port: int = Field(default=8000, ge=1, le=65535)
    public_url: str | None = Field(default=None, description="Base URL the site sees, for status_url links.")
    secret_key: str | None = Field(default=None, description="Flask session key; generated into VAR_DIR if unset.")
    model_dir: Path | None = Field(default=None, description="Model artifacts; VAR_DIR/models when unset.")
    data_dir: Path | None = Field(default=None, description="Public data sets that `moderation run` trains on.")
    # Room for every field of a comment at its longest (20,000 characters of body) even when each is an emoji
    # sent as two \uXXXX escapes (12 bytes), as json.dumps writes it by default.
    max_body_bytes: int = Field(default=384 * 1024, ge=1024)
    site_cache_seconds: float = Field(
        default=5.0,
        ge=0,
        description="How long a web process reuses a site's secrets, and which site names exist, before reading again.",
    )
    rate_limit_per_site: str = Field(default="1200/minute", description="Intake limit per site (limits syntax).")
    rate_limit_per_author_ip: str = Field(default="20/minute", description="Intake limit per author IP and site.")
    web_workers: int = Field(default=2, ge=1)
    worker_concurrency: int = Field(default=2, ge=1)
    # Each worker host is scraped on its own: web's /metrics reads only its own host's metrics folder. Not
    # 9808, the port of celery-exporter, the exporter most likely to run beside a Celery worker.
    worker_metrics_port: int = Field(
        default=9809,
        ge=0,
        le=65535,
        description="Port where a worker's main process serves its Prometheus metrics; 0 turns it off.",
    )
    worker_metrics_host: str = Field(
        default="127.0.0.1", description="Interface the worker's metrics port binds (0.0.0.0: every interface)."
    )
    classify_batch_size: int = Field(
        default=20, ge=1, le=500, description="Comments a classify task decides together when more are waiting."
    )
    outbox_quiet_seconds: float = Field(default=30.0, gt=0)
    outbox_relay_interval_seconds: float = Field(default=5.0, gt=0)
    callback_timeout_seconds: float = Field(default=10.0, gt=0)
    callback_retry_base_seconds: float = Field(default=30.0, gt=0)
    callback_retry_max_seconds: float = Field(default=6 * 3600.0, gt=0)
    callback_max_attempts: int = Field(default=12, ge=1)
    callback_retry_interval_seconds: float = Field(default=5.0, gt=0)
    model_check_interval_seconds: float = Field(default=10.0, ge=0)
    secret_rotation_overlap_hours: float = Field(default=24.0, ge=0)
    trusted_proxies: int = Field(
        default=0,
        ge=0,
        le=5,
        description="Reverse proxies in front of the web processes whose X-Forwarded-For and -Proto are "
        "believed (the sign-in limit counts the client's address); 0 believes none.",
    )
    session_cookie_secure: bool = Field(default=False, description="Send the dashboard session cookie over HTTPS only.")
    login_rate_limit: str = Field(
        default="10/minute",
        description="Dashboard login attempts per IP and per e-mail (per browser, once it signed in with the e-mail).",
    )
    dashboard_session_hours: float = Field(
        default=12,
        gt=0,
        le=24 * 366,  # a year is already no time-out; a huge number would overflow the cookie's expiry date
        description="Hours without a request after which a dashboard session ends.",
    )
    example_port: int = Field(
        default=8001, ge=1, le=65535, description="Port of the example site `moderation run` serves."
    )
    retrain_interval_hours: float = Field(
        default=0, ge=0, description="Scheduled retraining with moderator labels; 0 turns it off."
    )
    retain_personal_days: int = Field(
        default=30, ge=0, description="Days an author's IP address and user agent are kept; 0 keeps them."
    )
    retain_closed_days: int = Field(
        default=365, ge=0, description="Days after a comment is closed until its author is anonymized; 0 keeps."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    log_format: Literal["json", "text"] = "json"

    @field_validator("database_url", "redis_url", "secret_key", "model_dir", "data_dir", "public_url", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # `KEY=` in an env file means "not set" (the documented default), as it always did for DATABASE_URL.
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("host", mode="before")
    @classmethod
    def _empty_host_is_the_default(cls, value: object) -> object:
        # `HOST=` means "not set", as for the other settings; passed on as it is, gunicorn would read the empty
        # host as every interface and publish the dashboard to the network.
        return DEFAULT_HOST if isinstance(value, str) and not value.strip() else value

    @field_validator("log_level", mode="before")
    @classmethod
    def _any_case_log_level(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        level = value.strip().upper() or "INFO"  # `LOG_LEVEL=` is the default, as for the other settings
        return LOG_LEVEL_ALIASES.get(level, level)  # Python's logging takes these, Celery's --loglevel does not

    @field_validator("public_url")
    @classmethod
    def _base_url(cls, value: str | None) -> str | None:
        if value is None:
            return value
        value = value.strip()
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 (a port that is not a number raises here)
        except ValueError:
            parts = None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or "?" in value or "#" in value:
            # status_url is this plus a path: anything else would hand every site a link that goes nowhere.
            raise PydanticCustomError(
                "public_url", "must be an http:// or https:// base URL, e.g. https://moderation.example.org"
            )
        return value

    @model_validator(mode="after")
    def _retry_cap_above_the_first_delay(self) -> Settings:
        # Only a cap that was set: a first delay set above the default cap is capped as it always was.
        if "callback_retry_max_seconds" in self.model_fields_set and (
            self.callback_retry_max_seconds < self.callback_retry_base_seconds
        ):
            raise PydanticCustomError(
                "callback_retry_max_seconds",
                "CALLBACK_RETRY_MAX_SECONDS ({maximum}) is less than CALLBACK_RETRY_BASE_SECONDS ({base}): the "
                "cap on one retry's delay cannot be below the first delay",
                {"maximum": f"{self.callback_retry_max_seconds:g}", "base": f"{self.callback_retry_base_seconds:g}"},
            )
        return self

    @field_validator("database_url")
    @classmethod
    def _readable_database_url(cls, value: str | None) -> str | None:
        if value is not None:
            check_database_url(value)
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if value is not None and not is_redis_url(value):
            # Without this, kombu reads a URL with no scheme as AMQP and retries it forever.
            raise PydanticCustomError(
                "redis_url", "must be a redis:// or rediss:// (TLS) URL, e.g. redis://127.0.0.1:6379/0"
            )
        return value

    @field_validator("secret_key")
    @classmethod
    def _long_secret_key(cls, value: str | None) -> str | None:
        if value is not None and len(value) < MIN_SECRET_KEY_LENGTH:
            # Sessions signed with a short key can be forged by guessing it; the length, not the key, is told.
            raise PydanticCustomError(
                "secret_key",
                "{length} characters, fewer than {minimum}: generate one with `openssl rand -hex 32`, or leave "
                "it unset to have one generated into VAR_DIR/secret_key (one web host only)",
                {"length": len(value), "minimum": MIN_SECRET_KEY_LENGTH},
            )
        return value

    @field_validator("rate_limit_per_site", "rate_limit_per_author_ip", "login_rate_limit")
    @classmethod
    def _rate_limit(cls, value: str) -> str:
        # Checked here, so that every command refuses it, not only web, when it starts serving.
        try:
            parse_many(value)
        except ValueError:
            raise PydanticCustomError(
                "rate_limit",
                "'{value}' is not a rate limit in limits syntax; write e.g. 1200/minute, 50/second, or "
                "10/minute;100/hour for two limits",
                {"value": value},
            ) from None
        return value

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.var_dir / 'moderation.db').resolve()}"

    @property
    def broker_url(self) -> str:
        return self.redis_url or DEFAULT_REDIS_URL

    @property
    def effective_model_dir(self) -> Path:
        return (self.model_dir or self.var_dir / "models").resolve()

    @property
    def secret_overlap(self) -> timedelta:
        return timedelta(hours=self.secret_rotation_overlap_hours)


def is_redis_url(value: str) -> bool:
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 (a port that is not a number raises here)
    except ValueError:
        return False
    return parts.scheme in REDIS_SCHEMES


def redacted_url(url: str) -> str:
    """``url`` with its password hidden, taken as everything between the user name's ``:`` and the last
    ``@``: a password with an unescaped ``@`` or ``/`` is not where a URL parser looks for it."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not sep or not at:
        return url
    user, colon, _password = userinfo.partition(":")
    if "@" in user:  # which part is the user is anybody's guess: show neither
        return f"{scheme}://***@{host}"
    return f"{scheme}://{user}{':***' if colon else ''}@{host}"


SUPPORTED_DATABASES = ("postgresql", "sqlite")  # the migrations' and the locking's own two


def check_database_url(value: str) -> None:
    """A URL SQLAlchemy can parse, naming a dialect it has; the error never shows the password."""
    if value.split("?", 1)[0].count("@") > 1:
        raise PydanticCustomError("database_url", "a user name or password holding '@' must be URL-encoded ('%40')")
    try:
        url = make_url(value)
    except (ArgumentError, ValueError):
        raise PydanticCustomError(
            "database_url", "not a URL SQLAlchemy can read; e.g. {example}", {"example": DATABASE_URL_EXAMPLE}
        ) from None
    try:
        dialect = url.get_dialect()
    except ArgumentError:  # NoSuchModuleError: e.g. postgres:// (SQLAlchemy calls it postgresql://)
        raise PydanticCustomError(
            "database_url",
            "{url} names no database SQLAlchemy knows ('{name}'); e.g. {example}",
            {
                "url": redacted_url(value),
                "name": url.drivername,
                "example": DATABASE_URL_EXAMPLE,
            },
        ) from None
    if getattr(dialect, "is_async", False):
        raise PydanticCustomError(
            "database_url",
            "{url}: '{name}' is an asyncio driver, which this service does not use; e.g. {example}",
            {"url": redacted_url(value), "name": url.drivername, "example": DATABASE_URL_EXAMPLE},
        )
    if dialect.name not in SUPPORTED_DATABASES:
        raise PydanticCustomError(
            "database_url",
            "{url}: this service runs on PostgreSQL or SQLite, not '{name}'; e.g. {example}",
            {"url": redacted_url(value), "name": dialect.name, "example": DATABASE_URL_EXAMPLE},
        )
    try:
        dialect.import_dbapi()
    except ImportError:  # e.g. postgresql+asyncpg:// without asyncpg installed
        raise PydanticCustomError(
            "database_url",
            "{url}: its driver '{name}' is not installed; e.g. {example}",
            {"url": redacted_url(value), "name": url.drivername, "example": DATABASE_URL_EXAMPLE},
        ) from None


def describe_invalid_settings(error: ValidationError) -> str:
    """One line per wrong setting, named as in the environment; never its value (a secret, a password)."""
    return "\n".join(
        f"invalid setting {'.'.join(str(part) for part in entry['loc']).upper()}: {entry['msg']}"
        if entry["loc"]
        else f"invalid settings: {entry['msg']}"  # about two of them: the message names both
        for entry in error.errors(include_url=False, include_input=False, include_context=False)
    )
