"""mailing: trigger webhooks, trigger calls, broadcast event uuid, content sender

Revision ID: 0002_mailing
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_mailing"
down_revision = "0001"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "triggers",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("portal_id", sa.BigInteger(), nullable=False),
        sa.Column("brand_id", sa.BigInteger(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("secret_hash", sa.String(length=64), nullable=False),
        sa.Column("content_id", sa.BigInteger(), nullable=False),
        sa.Column("customer_key", sa.String(length=32), nullable=False),
        sa.Column("mapping", sa.Text(), server_default="{}", nullable=False),
        sa.Column("dedupe_path", sa.Text(), server_default="", nullable=False),
        sa.Column(
            "mailing_type", sa.String(length=100), server_default="", nullable=False
        ),
        sa.Column(
            "test_mailing",
            sa.Boolean(),
            server_default=sa.text("false"),
            nullable=False,
        ),
        sa.Column(
            "create_customers",
            sa.Boolean(),
            server_default=sa.text("true"),
            nullable=False,
        ),
        sa.Column(
            "active", sa.Boolean(), server_default=sa.text("true"), nullable=False
        ),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_triggers")),
        sa.UniqueConstraint("name", name=op.f("uq_triggers_name")),
    )
    op.create_table(
        "trigger_calls",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("trigger_id", sa.BigInteger(), nullable=False),
        sa.Column(
            "dedupe_key", sa.String(length=400), server_default="", nullable=False
        ),
        sa.Column("send_id", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("broadcast_id", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("error", sa.Text(), server_default="", nullable=False),
        sa.Column("received_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_trigger_calls")),
    )
    with op.batch_alter_table("trigger_calls", schema=None) as batch_op:
        batch_op.create_index(
            "uq_trigger_calls_dedupe",
            ["trigger_id", "dedupe_key"],
            unique=True,
            sqlite_where=sa.text("dedupe_key != ''"),
            postgresql_where=sa.text("dedupe_key != ''"),
        )
    with op.batch_alter_table("broadcasts", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "event_uuid", sa.String(length=36), server_default="", nullable=False
            )
        )
        batch_op.create_index("ix_broadcasts_send_state", ["send_id", "state"])
    with op.batch_alter_table("contents", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "from_address", sa.String(length=400), server_default="", nullable=False
            )
        )
    with op.batch_alter_table("customers", schema=None) as batch_op:
        batch_op.create_index(
            "ix_customers_external_id", ["portal_id", "brand_id", "external_id"]
        )


def downgrade() -> None:
    with op.batch_alter_table("customers", schema=None) as batch_op:
        batch_op.drop_index("ix_customers_external_id")
    with op.batch_alter_table("contents", schema=None) as batch_op:
        batch_op.drop_column("from_address")
    with op.batch_alter_table("broadcasts", schema=None) as batch_op:
        batch_op.drop_index("ix_broadcasts_send_state")
        batch_op.drop_column("event_uuid")
    with op.batch_alter_table("trigger_calls", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_trigger_calls_dedupe",
            sqlite_where=sa.text("dedupe_key != ''"),
            postgresql_where=sa.text("dedupe_key != ''"),
        )
    op.drop_table("trigger_calls")
    op.drop_table("triggers")
