"""the knowledge base (知识库): articles and their segmented words

Revision ID: 0018
Revises: 0017
Create Date: 2026-11-29 22:00:00.000000

`knowledge_articles` holds the answers agents give to consultations (咨询); each article's
title, keywords and body are cut into words by jieba and kept in `knowledge_terms`, which
the search matches a query's words against on either database.
"""

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "knowledge_articles",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("category", sa.String(length=40), nullable=False),
        sa.Column("keywords", sa.String(length=300), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(length=50), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_knowledge_articles")),
        sa.UniqueConstraint("title", name=op.f("uq_knowledge_articles_title")),
    )
    op.create_index(op.f("ix_knowledge_articles_category"), "knowledge_articles",
                    ["category"])
    op.create_table(
        "knowledge_terms",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("article_id", sa.Integer(), nullable=False),
        sa.Column("field", sa.String(length=8), nullable=False),
        sa.Column("term", sa.String(length=40), nullable=False),
        sa.Column("hits", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["article_id"], ["knowledge_articles.id"],
                                name=op.f("fk_knowledge_terms_article_id_knowledge_articles"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_knowledge_terms")),
        sa.UniqueConstraint("article_id", "field", "term",
                            name=op.f("uq_knowledge_terms_article_id")),
    )
    op.create_index(op.f("ix_knowledge_terms_article_id"), "knowledge_terms", ["article_id"])
    op.create_index(op.f("ix_knowledge_terms_term"), "knowledge_terms", ["term"])


def downgrade() -> None:
    op.drop_index(op.f("ix_knowledge_terms_term"), table_name="knowledge_terms")
    op.drop_index(op.f("ix_knowledge_terms_article_id"), table_name="knowledge_terms")
    op.drop_table("knowledge_terms")
    op.drop_index(op.f("ix_knowledge_articles_category"), table_name="knowledge_articles")
    op.drop_table("knowledge_articles")
