"""Shadow periods (one row each) and the optional canary and shadow blocks of a gate policy.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
NOW = sa.text("now()")


def upgrade() -> None:
    op.add_column("gate_policies", sa.Column("canary", JSON))
    op.add_column("gate_policies", sa.Column("shadow", JSON))
    op.create_table(
        "shadows",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("model_name", sa.String(256), nullable=False),
        sa.Column("version", sa.String(32), nullable=False),
        sa.Column("production_version", sa.String(32)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("share", sa.Integer, nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("started_by", sa.String(64), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), server_default=NOW, nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True)),
        sa.Column("ended_by", sa.String(64)),
        sa.Column("end_reason", sa.Text),
    )
    op.create_index("ix_shadows_model_id", "shadows", ["model_name", "id"])
    # At most one shadow of a model runs, whatever the replicas do.
    op.create_index("ux_shadows_one_running", "shadows", ["model_name"], unique=True,
                    postgresql_where=sa.text("status = 'running'"))


def downgrade() -> None:
    op.drop_index("ux_shadows_one_running", table_name="shadows")
    op.drop_index("ix_shadows_model_id", table_name="shadows")
    op.drop_table("shadows")
    op.drop_column("gate_policies", "shadow")
    op.drop_column("gate_policies", "canary")
