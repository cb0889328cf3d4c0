"""Settings of the mailing side, read from the environment (``PEGABRIDGE_*``).

They live beside the core settings rather than in them so that mailing can grow its
knobs without touching the core; both read the same ``PEGABRIDGE_`` prefix.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class MailSettings(BaseSettings):
    """How email goes out.

    Without ``smtp_host`` the embedded default writes each email as an ``.eml`` file
    into ``<var_dir>/outbox-mail/`` where a person can open it.
    """

    model_config = SettingsConfigDict(env_prefix="PEGABRIDGE_", extra="ignore")

    smtp_host: str = ""
    smtp_port: int = Field(default=25, ge=1, le=65535)
    # none (plain), starttls (upgrade after EHLO) or tls (implicit TLS, port 465)
    smtp_security: Literal["none", "starttls", "tls"] = "none"
    smtp_username: str = ""
    smtp_password: str = Field(default="", repr=False)
    smtp_timeout_s: float = 30.0
    smtp_connections: int = Field(default=8, ge=1, le=128)
    smtp_messages_per_connection: int = Field(default=1000, ge=1)

    mail_from: str = "pegabridge <noreply@localhost>"
    # Domain of the VERP return path bounce+<token>@<domain>; "" keeps mail_from's.
    return_path_domain: str = ""
    # Domain in Message-ID headers; "" uses the return path domain.
    message_id_domain: str = ""

    # Customers read per page in a bulk send; memory is flat in the list's length.
    send_page_size: int = Field(default=500, ge=1, le=10_000)
