"""The constraint naming convention every SQLAlchemy schema here uses (hub tables, ledger).

Named constraints keep Alembic batch migrations (SQLite) and PostgreSQL in step.
"""

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
