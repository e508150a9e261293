"""topic translations

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-02

``topics.translations``: a topic's label and description in other languages, as JSON
(``{"de": {"name": ..., "description": ...}}``), set with ``newsletter topics rename --language``.
The three seeded topics get their German and French labels, unless the store has renamed them.
"""

import json

import sqlalchemy as sa
from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None

#: the seeded topics' English (0001) and their German and French, set only while the English is unchanged
SEEDED = {
    "newsletter": (
        ("Newsletter", "Stories, guides and what is new at the store, about once a month."),
        {
            "de": {
                "name": "Newsletter",
                "description": "Geschichten, Ratgeber und Neues aus dem Shop, etwa einmal im Monat.",
            },
            "fr": {
                "name": "Newsletter",
                "description": "Histoires, conseils et nouveautés de la boutique, environ une fois par mois.",
            },
        },
    ),
    "early-access": (
        ("Early-access sales", "Our sales before everyone else; the more loyal, the earlier."),
        {
            "de": {
                "name": "Vorverkauf für Stammkunden",
                "description": "Unsere Sales vor allen anderen; je treuer, desto früher.",
            },
            "fr": {
                "name": "Ventes en avant-première",
                "description": "Nos ventes avant tout le monde ; plus vous êtes fidèle, plus c'est tôt.",
            },
        },
    ),
    "product-news": (
        ("Product news", "New arrivals and products back in stock."),
        {
            "de": {
                "name": "Produktneuheiten",
                "description": "Neuheiten und Produkte, die wieder vorrätig sind.",
            },
            "fr": {
                "name": "Nouveautés produits",
                "description": "Nouveaux arrivages et produits de nouveau en stock.",
            },
        },
    ),
}


def upgrade() -> None:
    op.add_column("topics", sa.Column("translations", sa.JSON(), nullable=False, server_default="{}"))
    topics = sa.table(
        "topics",
        sa.column("slug", sa.String),
        sa.column("name", sa.String),
        sa.column("description", sa.String),
        sa.column("translations", sa.JSON),
    )
    for slug, ((name, description), translations) in SEEDED.items():
        op.execute(
            topics.update()
            .where(topics.c.slug == slug, topics.c.name == name, topics.c.description == description)
            .values(translations=json.loads(json.dumps(translations)))
        )


def downgrade() -> None:
    # DROP COLUMN, not a batch copy (0020 says why)
    op.drop_column("topics", "translations")
