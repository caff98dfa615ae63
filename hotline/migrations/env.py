"""Alembic environment: the engine comes from the hotline settings, never from an ini file."""

from alembic import context

import channels.models  # noqa: F401  (registers the tables on Base.metadata)
import hotline.auth  # noqa: F401
import telephony.models  # noqa: F401
import tickets.models  # noqa: F401
from hotline.db import Base

engine = context.config.attributes["engine"]
with engine.begin() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()
