"""installations: the scope and client authentication of an OAuth 2.0 client

The token URL, client id and encrypted secret have had columns since the first schema;
a client credentials grant also needs the scope to ask for and whether the client
authenticates with HTTP Basic or in the form body (RFC 6749 section 2.3.1).

Revision ID: 0005_oauth_client
Revises: 0004_feedback
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_oauth_client"
down_revision = "0004_feedback"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("installations", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("oauth_scope", sa.Text(), server_default="", nullable=False)
        )
        batch_op.add_column(
            sa.Column(
                "oauth_client_auth",
                sa.String(length=16),
                server_default="basic",
                nullable=False,
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("installations", schema=None) as batch_op:
        batch_op.drop_column("oauth_client_auth")
        batch_op.drop_column("oauth_scope")
