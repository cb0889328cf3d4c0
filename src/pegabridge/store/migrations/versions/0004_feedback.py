"""feedback: recorded events per message, one message once, broadcasts by Message-ID

Revision ID: 0004_feedback
Revises: 0003_web_sessions
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_feedback"
down_revision = "0003_web_sessions"
branch_labels = None
depends_on = None

_RECORDED = sa.text("outcome IN ('recording', 'sent')")
_HAS_SHA = sa.text("message_sha256 != ''")
_HAS_MESSAGE_ID = sa.text("message_id != ''")


def upgrade() -> None:
    with op.batch_alter_table("feedback_messages", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "customer_id", sa.BigInteger(), server_default="0", nullable=False
            )
        )
        batch_op.add_column(
            sa.Column(
                "recipient", sa.String(length=320), server_default="", nullable=False
            )
        )
        batch_op.add_column(
            sa.Column("events", sa.Text(), server_default="[]", nullable=False)
        )
        batch_op.create_index(
            "uq_feedback_messages_sha256",
            ["message_sha256"],
            unique=True,
            sqlite_where=_HAS_SHA,
            postgresql_where=_HAS_SHA,
        )
        batch_op.create_index(
            "uq_feedback_messages_broadcast_kind",
            ["broadcast_id", "kind"],
            unique=True,
            sqlite_where=_RECORDED,
            postgresql_where=_RECORDED,
        )
    with op.batch_alter_table("broadcasts", schema=None) as batch_op:
        batch_op.create_index(
            "ix_broadcasts_message_id",
            ["message_id"],
            sqlite_where=_HAS_MESSAGE_ID,
            postgresql_where=_HAS_MESSAGE_ID,
        )


def downgrade() -> None:
    with op.batch_alter_table("broadcasts", schema=None) as batch_op:
        batch_op.drop_index("ix_broadcasts_message_id")
    with op.batch_alter_table("feedback_messages", schema=None) as batch_op:
        batch_op.drop_index("uq_feedback_messages_broadcast_kind")
        batch_op.drop_index("uq_feedback_messages_sha256")
        batch_op.drop_column("events")
        batch_op.drop_column("recipient")
        batch_op.drop_column("customer_id")
