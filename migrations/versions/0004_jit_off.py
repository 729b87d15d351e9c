"""PostgreSQL: no JIT compilation of this database's queries.

``segment_readings`` joins each segment to its facility's readings in a window around it.
The planner cannot know how many readings such a window holds: it takes each bound of the
window to keep a third of a sensor's readings, so at ten million readings it expects about
5,500 readings per segment and sensor where there are about 11. The documented query for one
facility and one day is then costed at some 20 million, far over ``jit_above_cost``
(100,000), and PostgreSQL spends about 0.8 s compiling it with LLVM (inlining and
optimization) before it runs for about 0.2 s: the query took 0.9 s instead of 0.2 s
(``tests/bench/sql_at_size.py``, docs/benchmarks.md). Better estimates would not save it:
even a perfect one costs the query over 100,000. No index or view shape changes that, so JIT
is turned off for the database, as is usual for databases that mostly answer short queries.

It is a database setting (``ALTER DATABASE … SET jit = off``): it applies to every role's new
sessions and needs the database's owner or a superuser. A role that is neither leaves it as it
was and logs a warning saying what to run; nothing else depends on it.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from alembic import op
from sqlalchemy import text

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

log = logging.getLogger("alembic.runtime.migration")

# Superuser, or a member of the role that owns the database (what ALTER DATABASE asks).
_MAY_ALTER_DATABASE = """
SELECT current_database(),
    (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
    OR pg_has_role(current_user, d.datdba, 'MEMBER')
FROM pg_database d WHERE d.datname = current_database()
"""


def _alter_database(action: str) -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    name, allowed = bind.execute(text(_MAY_ALTER_DATABASE)).one()
    statement = f"ALTER DATABASE {bind.dialect.identifier_preparer.quote(name)} {action}"
    if allowed:
        op.execute(statement)
    else:
        log.warning(
            "not the owner of database %s: left JIT as it was; run as its owner: %s",
            name,
            statement,
        )


def upgrade() -> None:
    _alter_database("SET jit = off")


def downgrade() -> None:
    _alter_database("RESET jit")
