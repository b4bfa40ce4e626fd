"""Every setting, read from the environment once, with the defaults documented in the README."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore", frozen=True)

    var_dir: Path = Field(default=Path("var"), description="Where SQLite, models and the bundled Redis live.")
    database_url: str | None = Field(default=None, description="SQLAlchemy URL; SQLite in VAR_DIR when unset.")
    redis_url: str | None = Field(default=None, description="Broker URL; `moderation run` bundles Redis when unset.")
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    public_url: str | None = Field(default=None, description="Base URL the site sees, for status_url links.")
    secret_key: str | None = Field(default=None, description="Flask session key; generated into VAR_DIR if unset.")
    model_dir: Path | None = Field(default=None, description="Model artifacts; VAR_DIR/models when unset.")
    data_dir: Path | None = Field(default=None, description="Public data sets that `moderation run` trains on.")
    max_body_bytes: int = 64 * 1024
    site_cache_seconds: float = Field(
        default=5.0, ge=0, description="How long a web process reuses a site's secrets before reading them again."
    )
    rate_limit_per_site: str = Field(default="1200/minute", description="Intake limit per site (limits syntax).")
    rate_limit_per_author_ip: str = Field(default="20/minute", description="Intake limit per author IP and site.")
    web_workers: int = Field(default=2, ge=1)
    worker_concurrency: int = Field(default=2, ge=1)
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
    login_rate_limit: str = Field(default="10/minute", description="Dashboard login attempts per IP and per e-mail.")
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
    log_level: str = "INFO"
    log_format: Literal["json", "text"] = "json"

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
