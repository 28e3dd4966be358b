"""Principals and API tokens, gate policies, golden sets; audit rows name principals (and on whose behalf).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
NOW = sa.text("now()")


def upgrade() -> None:
    op.alter_column("audit_log", "actor", type_=sa.String(64))
    op.add_column("audit_log", sa.Column("on_behalf_of", sa.String(64)))
    op.alter_column("decisions", "decided_by", type_=sa.String(64))
    op.add_column("decisions", sa.Column("evidence", JSON))
    op.alter_column("incidents", "opened_by", type_=sa.String(64))

    op.create_table(
        "principals",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=NOW, nullable=False),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("disabled_at", sa.DateTime(timezone=True)),
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("principal_id", sa.Integer, sa.ForeignKey("principals.id"), nullable=False, index=True),
        sa.Column("token_sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("description", sa.Text),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=NOW, nullable=False),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True)),
        sa.Column("revoked_at", sa.DateTime(timezone=True)),
        sa.Column("revoked_by", sa.String(64)),
    )
    op.create_table(
        "gate_policies",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("model_name", sa.String(256), nullable=False),
        sa.Column("revision", sa.Integer, nullable=False),
        sa.Column("metric", sa.String(64), nullable=False),
        sa.Column("higher_is_better", sa.Boolean, nullable=False),
        sa.Column("threshold", sa.Float),
        sa.Column("margin", sa.Float, nullable=False),
        sa.Column("set_by", sa.String(64), nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("set_at", sa.DateTime(timezone=True), server_default=NOW, nullable=False),
    )
    op.create_index("ix_gate_policies_model_revision", "gate_policies", ["model_name", "revision"], unique=True)
    op.create_table(
        "golden_sets",
        sa.Column("model_name", sa.String(256), primary_key=True),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("source", sa.Text),
        sa.Column("rows", sa.Integer),
        sa.Column("set_by", sa.String(64), nullable=False),
        sa.Column("set_at", sa.DateTime(timezone=True), server_default=NOW, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("golden_sets")
    op.drop_index("ix_gate_policies_model_revision", table_name="gate_policies")
    op.drop_table("gate_policies")
    op.drop_table("api_tokens")
    op.drop_table("principals")
    op.drop_column("decisions", "evidence")
    op.drop_column("audit_log", "on_behalf_of")
