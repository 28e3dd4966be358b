"""Canary rollouts: one row per canary, with its steps, the split in force and the checks of every step.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
NOW = sa.text("now()")


def upgrade() -> None:
    op.create_table(
        "canaries",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("model_name", sa.String(256), nullable=False),
        sa.Column("version", sa.String(32), nullable=False),
        sa.Column("production_version", sa.String(32)),
        sa.Column("status", sa.String(24), nullable=False),
        sa.Column("steps", JSON, nullable=False),
        sa.Column("step_index", sa.Integer, nullable=False),
        sa.Column("weight", sa.Integer, nullable=False),
        sa.Column("interval", sa.String(16), nullable=False),
        sa.Column("interval_seconds", sa.Float, nullable=False),
        sa.Column("require_approval", sa.Boolean, nullable=False),
        sa.Column("thresholds", JSON, nullable=False),
        sa.Column("checks", JSON, nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("started_by", sa.String(64), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), server_default=NOW, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=NOW, nullable=False),
        sa.Column("next_check_at", sa.DateTime(timezone=True)),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.Column("finished_by", sa.String(64)),
    )
    op.create_index("ix_canaries_model_id", "canaries", ["model_name", "id"])
    op.create_index("ix_canaries_due", "canaries", ["next_check_at"], postgresql_where=sa.text("status = 'running'"))
    # At most one canary of a model is under way, whatever the replicas do.
    op.create_index("ux_canaries_one_active", "canaries", ["model_name"], unique=True,
                    postgresql_where=sa.text("status IN ('running', 'paused', 'awaiting_approval')"))


def downgrade() -> None:
    op.drop_index("ux_canaries_one_active", table_name="canaries")
    op.drop_index("ix_canaries_due", table_name="canaries")
    op.drop_index("ix_canaries_model_id", table_name="canaries")
    op.drop_table("canaries")
