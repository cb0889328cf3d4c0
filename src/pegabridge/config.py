"""Settings of a pegabridge process, read from the environment (``PEGABRIDGE_*``)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every knob of the service, with a default that runs a trial on a laptop.

    The embedded default keeps its state under ``var_dir``: the SQLite database, the key
    file for secrets, and the outgoing mail folder.
    """

    model_config = SettingsConfigDict(env_prefix="PEGABRIDGE_", extra="ignore")

    var_dir: Path = Path("var")
    database_url: str = ""
    secret_key: str = ""
    sqlite_synchronous: str = "FULL"

    # Delivery.
    lane_concurrency: int = Field(default=16, ge=1, le=256)
    connect_timeout_s: float = 5.0
    request_timeout_s: float = 15.0
    poll_interval_s: float = 0.5
    lease_s: float = 30.0
    memory_queue_limit: int = 20_000
    claim_batch: int = 500
    retry_base_s: float = 10.0
    retry_max_delay_s: float = 6 * 3600.0
    retry_max_age_s: float = 4 * 24 * 3600.0
    retry_jitter: float = 0.25
    circuit_threshold: int = 5
    circuit_probe_s: float = 30.0
    pause_after_400s: int = 3

    # Database (PostgreSQL): pool, timeouts, and waking workers on new events.
    db_pool_size: int = Field(default=10, ge=1, le=500)
    db_max_overflow: int = Field(default=10, ge=0, le=500)
    db_pool_timeout_s: float = 10.0
    db_connect_timeout_s: float = 5.0
    db_statement_timeout_s: float = 30.0
    db_listen: bool = True

    # Housekeeping: delivered events and their attempt logs are kept this long.
    retention_s: float = Field(default=14 * 24 * 3600.0, gt=0)
    purge_interval_s: float = 300.0
    purge_batch: int = Field(default=1000, ge=1, le=100_000)

    # Ingest.
    max_body_bytes: int = 10 * 1024 * 1024
    max_items_per_request: int = 10_000

    # Web.
    public_base_url: str = "http://127.0.0.1:8000"

    # Feedback: the SMTP receiver for returned mail, run by `serve` when a port is set
    # (0 picks a free port). It takes mail for any address at the return-path domain
    # (any address at all when the domain is "").
    return_path_domain: str = ""
    feedback_smtp_host: str = "127.0.0.1"
    feedback_smtp_port: int | None = Field(default=None, ge=0, le=65535)
    feedback_max_message_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)

    # Web sign-in: sessions, lock-out after wrong passwords, the first-start link.
    session_max_age_s: float = Field(default=12 * 3600.0, gt=0)
    signin_max_failures: int = Field(default=5, ge=1)
    signin_lockout_s: float = Field(default=15 * 60.0, ge=0)
    setup_link_ttl_s: float = Field(default=24 * 3600.0, gt=0)

    # Endpoints: names resolving to private, link-local or cloud-metadata addresses
    # are refused unless inside one of these comma-separated ranges (CIDR).
    endpoint_allowed_ranges: str = ""
    endpoint_allow_loopback: bool = True

    # Tracking: token signing keys ("id:base64secret,...", oldest first; empty derives
    # one from the secret key), Apple's relay range file (empty: rule off), and how
    # long the click cookie that attributes conversions lives.
    tracking_keys: str = ""
    apple_relay_ranges: str = ""
    conversion_cookie_max_age_s: int = Field(default=30 * 24 * 3600, ge=0)

    def resolved_database_url(self) -> str:
        """The database URL; by default the embedded SQLite file in ``var_dir``."""
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.var_dir / 'pegabridge.db').resolve()}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
