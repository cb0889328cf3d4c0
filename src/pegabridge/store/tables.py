"""The database schema: every table of pegabridge, in one SQLAlchemy ``MetaData``.

Times are stored as Unix seconds (floats) so that SQLite and PostgreSQL compare and sort
them the same way. JSON documents are stored as text, written by our own serialisers, so
that an event's payload is sent byte for byte as it was recorded.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# An auto-increment key that is INTEGER on SQLite (so it aliases the rowid) and BIGINT
# elsewhere.
Id = BigInteger().with_variant(Integer(), "sqlite")

portals = Table(
    "portals",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("name", String(200), nullable=False),
    Column("created_at", Float, nullable=False),
)

brands = Table(
    "brands",
    metadata,
    Column("portal_id", BigInteger, ForeignKey("portals.id"), primary_key=True),
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("name", String(200), nullable=False),
    Column("created_at", Float, nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("portal_id", BigInteger, ForeignKey("portals.id"), nullable=False),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("prefix", String(16), nullable=False),
    Column("label", String(200), nullable=False, server_default=""),
    Column("created_at", Float, nullable=False),
    Column("revoked_at", Float),
)

installations = Table(
    "installations",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("portal_id", BigInteger, nullable=False),
    Column("brand_id", BigInteger, nullable=False),
    Column("app", String(32), nullable=False, server_default="pega"),
    # draft (wizard not finished), active, paused, uninstalled
    Column("state", String(16), nullable=False),
    Column("pause_reason", Text, nullable=False, server_default=""),
    Column("paused_at", Float),
    Column("endpoint_url", Text, nullable=False, server_default=""),
    Column("username", String(400), nullable=False, server_default=""),
    Column("password_enc", Text, nullable=False, server_default=""),
    Column("auth_kind", String(16), nullable=False, server_default="basic"),
    Column("oauth_token_url", Text, nullable=False, server_default=""),
    Column("oauth_client_id", String(400), nullable=False, server_default=""),
    Column("oauth_secret_enc", Text, nullable=False, server_default=""),
    Column("oauth_scope", Text, nullable=False, server_default=""),
    # how the OAuth 2.0 client authenticates at the token endpoint: basic or post
    Column("oauth_client_auth", String(16), nullable=False, server_default="basic"),
    Column("extra_headers", Text, nullable=False, server_default="{}"),
    Column("activities", Text, nullable=False, server_default=""),
    Column("invoice_interval", String(16), nullable=False, server_default="monthly"),
    Column("po_number", String(100), nullable=False, server_default=""),
    Column("wizard_step", Integer, nullable=False, server_default="1"),
    Column("config_version", Integer, nullable=False, server_default="1"),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("activated_at", Float),
    Column("uninstalled_at", Float),
    ForeignKeyConstraint(["portal_id", "brand_id"], ["brands.portal_id", "brands.id"]),
)
Index(
    "uq_installations_live_brand",
    installations.c.portal_id,
    installations.c.brand_id,
    installations.c.app,
    unique=True,
    sqlite_where=text("state != 'uninstalled'"),
    postgresql_where=text("state != 'uninstalled'"),
)

sequences = Table(
    "sequences",
    metadata,
    Column("portal_id", BigInteger, primary_key=True, autoincrement=False),
    Column("name", String(32), primary_key=True),
    Column("last_value", BigInteger, nullable=False),
)

outbox = Table(
    "outbox",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("uuid", String(36), nullable=False, unique=True),
    Column("portal_id", BigInteger, nullable=False),
    Column("brand_id", BigInteger, nullable=False),
    Column("installation_id", BigInteger),
    Column("metric", String(16), nullable=False),
    Column("metric_id", BigInteger, nullable=False),
    Column("customer_id", BigInteger, nullable=False, server_default="0"),
    Column("payload", Text, nullable=False),
    # pending, delivered, dead, skipped
    Column("state", String(16), nullable=False),
    Column("skip_reason", String(32), nullable=False, server_default=""),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("created_at", Float, nullable=False),
    Column("next_attempt_at", Float, nullable=False),
    Column("leased_by", String(64)),
    Column("lease_until", Float),
    Column("delivered_at", Float),
    # Set when a dead letter is replayed: its retry window starts again from here.
    Column("replayed_at", Float),
    Column("last_status", Integer),
    Column("last_error", Text, nullable=False, server_default=""),
)
Index(
    "ix_outbox_due",
    outbox.c.next_attempt_at,
    sqlite_where=text("state = 'pending'"),
    postgresql_where=text("state = 'pending'"),
)
Index("ix_outbox_installation_state", outbox.c.installation_id, outbox.c.state)
Index("ix_outbox_created_at", outbox.c.created_at)

delivery_attempts = Table(
    "delivery_attempts",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("outbox_id", BigInteger, nullable=False),
    Column("installation_id", BigInteger, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("at", Float, nullable=False),
    Column("duration_ms", Float, nullable=False),
    Column("status_code", Integer),
    # delivered, retry, paused, dead, released
    Column("outcome", String(16), nullable=False),
    Column("error", Text, nullable=False, server_default=""),
    Column("response_excerpt", Text, nullable=False, server_default=""),
)
Index("ix_delivery_attempts_outbox", delivery_attempts.c.outbox_id)
Index(
    "ix_delivery_attempts_inst_at",
    delivery_attempts.c.installation_id,
    delivery_attempts.c.at,
)

# --- Mailing: customers, contents, links, sends and personal broadcasts. ---

customers = Table(
    "customers",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("portal_id", BigInteger, nullable=False),
    Column("brand_id", BigInteger, nullable=False),
    Column("external_id", String(200), nullable=False, server_default=""),
    Column("email", String(320), nullable=False),
    Column("first_name", String(200), nullable=False, server_default=""),
    Column("last_name", String(200), nullable=False, server_default=""),
    Column("fields", Text, nullable=False, server_default="{}"),
    Column("tracking_consent", Boolean, nullable=False, server_default=text("true")),
    Column("unsubscribed_at", Float),
    Column("bounce_count_hard", Integer, nullable=False, server_default="0"),
    Column("bounce_count_soft", Integer, nullable=False, server_default="0"),
    Column("complaint_count", Integer, nullable=False, server_default="0"),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    UniqueConstraint("portal_id", "brand_id", "email", name="uq_customers_email"),
)

contents = Table(
    "contents",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("portal_id", BigInteger, nullable=False),
    Column("brand_id", BigInteger, nullable=False),
    Column("name", String(200), nullable=False),
    Column("subject", Text, nullable=False),
    Column("html", Text, nullable=False, server_default=""),
    Column("text", Text, nullable=False, server_default=""),
    # JSON object: manual variable name -> default value
    Column("variables", Text, nullable=False, server_default="{}"),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    # The From header; "" uses the process's PEGABRIDGE_MAIL_FROM.
    Column("from_address", String(400), nullable=False, server_default=""),
)

links = Table(
    "links",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("portal_id", BigInteger, nullable=False),
    Column("content_id", BigInteger, nullable=False),
    # click (a template link) or short (a short link written into content)
    Column("kind", String(8), nullable=False),
    Column("url", Text, nullable=False),
    Column("alt", Text, nullable=False, server_default=""),
    Column("tags", Text, nullable=False, server_default="[]"),
    Column("utm", Text, nullable=False, server_default="{}"),
    Column("created_at", Float, nullable=False),
)
Index("ix_links_content", links.c.content_id)

campaigns = Table(
    "campaigns",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("portal_id", BigInteger, nullable=False),
    Column("brand_id", BigInteger, nullable=False),
    Column("name", String(200), nullable=False),
    Column("created_at", Float, nullable=False),
)

sends = Table(
    "sends",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("portal_id", BigInteger, nullable=False),
    Column("brand_id", BigInteger, nullable=False),
    # QUICKMAIL, SINGLEMAIL, CAMPAIGNMAIL
    Column("event_type", String(16), nullable=False),
    Column("content_id", BigInteger, nullable=False),
    Column("campaign_id", BigInteger, nullable=False, server_default="0"),
    Column("campaign_object_id", BigInteger, nullable=False, server_default="0"),
    Column("mailing_type", String(100), nullable=False, server_default=""),
    Column("test_mailing", Boolean, nullable=False, server_default=text("false")),
    Column("address_override", String(320), nullable=False, server_default=""),
    Column("manual_options", Text, nullable=False, server_default="{}"),
    Column("hourly_limit", Integer, nullable=False, server_default="0"),
    # running, done, failed
    Column("state", String(16), nullable=False),
    Column("report", Text, nullable=False, server_default="{}"),
    Column("created_at", Float, nullable=False),
    Column("finished_at", Float),
)

broadcasts = Table(
    "broadcasts",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("portal_id", BigInteger, nullable=False),
    Column("brand_id", BigInteger, nullable=False),
    Column("send_id", BigInteger, nullable=False),
    Column("customer_id", BigInteger, nullable=False),
    Column("content_id", BigInteger, nullable=False),
    Column("email_address", String(320), nullable=False),
    # queued, sent, failed
    Column("state", String(16), nullable=False),
    Column("message_id", String(300), nullable=False, server_default=""),
    Column("sent_at", Float),
    # The basic fields of every event of this broadcast, as a JSON object (a snapshot
    # taken at send time so that later events describe the email as it was sent).
    Column("context", Text, nullable=False, server_default="{}"),
    Column("created_at", Float, nullable=False),
    # The uuid of this broadcast's `broadcasts` event, made once with the row so that
    # a resumed send records the same event again (and the recorder drops it).
    Column("event_uuid", String(36), nullable=False, server_default=""),
    UniqueConstraint("send_id", "customer_id", name="uq_broadcasts_send_customer"),
)
Index("ix_broadcasts_customer", broadcasts.c.customer_id)

# --- Pega trigger webhooks: one row per configured trigger, one per accepted call. ---

triggers = Table(
    "triggers",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("portal_id", BigInteger, nullable=False),
    Column("brand_id", BigInteger, nullable=False),
    # The last part of POST /api/v1/triggers/{name}; unique over all portals.
    Column("name", String(100), nullable=False, unique=True),
    # SHA-256 of the trigger's secret (Basic password or bearer token).
    Column("secret_hash", String(64), nullable=False),
    Column("content_id", BigInteger, nullable=False),
    # Which customer field identifies the customer: external_id, email or customer_id.
    Column("customer_key", String(32), nullable=False),
    # JSON: {"customer": {field: path}, "variables": {name: path}}
    Column("mapping", Text, nullable=False, server_default="{}"),
    Column("dedupe_path", Text, nullable=False, server_default=""),
    Column("mailing_type", String(100), nullable=False, server_default=""),
    Column("test_mailing", Boolean, nullable=False, server_default=text("false")),
    Column("create_customers", Boolean, nullable=False, server_default=text("true")),
    Column("active", Boolean, nullable=False, server_default=text("true")),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)

trigger_calls = Table(
    "trigger_calls",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("trigger_id", BigInteger, nullable=False),
    # The value at the trigger's dedupe path; "" when the trigger has none.
    Column("dedupe_key", String(400), nullable=False, server_default=""),
    Column("send_id", BigInteger, nullable=False, server_default="0"),
    Column("broadcast_id", BigInteger, nullable=False, server_default="0"),
    # accepted (send under way), sent, failed
    Column("state", String(16), nullable=False),
    Column("error", Text, nullable=False, server_default=""),
    Column("received_at", Float, nullable=False),
)
Index(
    "uq_trigger_calls_dedupe",
    trigger_calls.c.trigger_id,
    trigger_calls.c.dedupe_key,
    unique=True,
    sqlite_where=text("dedupe_key != ''"),
    postgresql_where=text("dedupe_key != ''"),
)
Index(
    "ix_customers_external_id",
    customers.c.portal_id,
    customers.c.brand_id,
    customers.c.external_id,
)
Index("ix_broadcasts_send_state", broadcasts.c.send_id, broadcasts.c.state)

# --- Tracking hits and incoming feedback mail. ---

tracking_hits = Table(
    "tracking_hits",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("portal_id", BigInteger, nullable=False),
    Column("broadcast_id", BigInteger, nullable=False),
    Column("link_id", BigInteger, nullable=False, server_default="0"),
    # open, click, short, unsubscribe, conversion
    Column("kind", String(16), nullable=False),
    Column("at", Float, nullable=False),
    Column("client_ip", String(64), nullable=False, server_default=""),
    Column("method", String(8), nullable=False, server_default="GET"),
    Column("user_agent", Text, nullable=False, server_default=""),
    Column("machine_generated", Boolean, nullable=False),
    Column("machine_reason", String(64), nullable=False, server_default=""),
    Column("event_uuid", String(36), nullable=False, server_default=""),
)
Index("ix_tracking_hits_broadcast", tracking_hits.c.broadcast_id, tracking_hits.c.at)

feedback_messages = Table(
    "feedback_messages",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("received_at", Float, nullable=False),
    # bounce, complaint, auto-reply, delay, delivered, other
    Column("kind", String(16), nullable=False),
    Column("source", String(32), nullable=False, server_default="smtp"),
    Column("broadcast_id", BigInteger),
    # sent, unmatched, ignored
    Column("outcome", String(16), nullable=False),
    Column("summary", Text, nullable=False, server_default="{}"),
    Column("message_sha256", String(64), nullable=False, server_default=""),
    # Added in 0004_feedback. The customer of the matched broadcast (0 when none), the
    # recipient the event is about, and the JSON list of the events built for the
    # message: kept until they are in the outbox (outcome "recording"), so that a
    # message that is delivered again after a crash records the same events again.
    # Outcomes added then: recording, duplicate.
    Column("customer_id", BigInteger, nullable=False, server_default="0"),
    Column("recipient", String(320), nullable=False, server_default=""),
    Column("events", Text, nullable=False, server_default="[]"),
)
# The same message imported twice is recorded once.
Index(
    "uq_feedback_messages_sha256",
    feedback_messages.c.message_sha256,
    unique=True,
    sqlite_where=text("message_sha256 != ''"),
    postgresql_where=text("message_sha256 != ''"),
)
# An email bounces (or is complained about) at most once, whatever the reports say.
Index(
    "uq_feedback_messages_broadcast_kind",
    feedback_messages.c.broadcast_id,
    feedback_messages.c.kind,
    unique=True,
    sqlite_where=text("outcome IN ('recording', 'sent')"),
    postgresql_where=text("outcome IN ('recording', 'sent')"),
)
Index(
    "ix_broadcasts_message_id",
    broadcasts.c.message_id,
    sqlite_where=text("message_id != ''"),
    postgresql_where=text("message_id != ''"),
)

# --- People who use the web pages. ---

users = Table(
    "users",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("portal_id", BigInteger),
    Column("email", String(320), nullable=False, unique=True),
    Column("password_hash", Text, nullable=False),
    Column("is_admin", Boolean, nullable=False, server_default=text("false")),
    Column("failed_logins", Integer, nullable=False, server_default="0"),
    Column("locked_until", Float),
    Column("created_at", Float, nullable=False),
)

# A signed-in browser: the cookie carries a random token; only its hash is stored.
web_sessions = Table(
    "web_sessions",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("user_id", BigInteger, nullable=False),
    Column("csrf_token", String(64), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
)
Index("ix_web_sessions_user", web_sessions.c.user_id)

# One-time links, printed on the console, that create the first administrator.
setup_tokens = Table(
    "setup_tokens",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("used_at", Float),
)
