"""keystone 30's tables as the simulated dcdbsync validates records against them.

A static copy of what the DB-sync agent reflects from a real keystone database
(:func:`dcorch.dbsync.schema.reflect_keystone`), so both refuse the same bad input with the same
status (:mod:`dcorch.dbsync.contract`); ``tests/dbsync/test_contract.py`` holds this copy equal
to a freshly migrated keystone's schema.
"""

from __future__ import annotations

from typing import Final

from dcorch.dbsync.contract import ColumnKind, ColumnSpec, Specs, TableSpec


def _table(name: str, *columns: tuple[str, ColumnKind, str, int | None]) -> TableSpec:
    """``(column, kind, flags, length)``: flags ``n`` nullable, ``r`` required, ``b`` BIGINT."""
    return TableSpec(
        name,
        {
            col: ColumnSpec(
                name=col,
                kind=kind,
                nullable="n" in flags,
                required="r" in flags,
                max_length=length,
                int_bits=64 if "b" in flags or kind != "int" else 32,
            )
            for col, kind, flags, length in columns
        },
    )


KEYSTONE_SPECS: Final[Specs] = {
    spec.name: spec
    for spec in (
        _table(
            "user",
            ("id", "str", "r", 64),
            ("extra", "str", "n", None),
            ("enabled", "bool", "n", None),
            ("default_project_id", "str", "n", 64),
            ("created_at", "datetime", "n", None),
            ("last_active_at", "date", "n", None),
            ("domain_id", "str", "r", 64),
        ),
        _table(
            "local_user",
            ("id", "int", "", None),
            ("user_id", "str", "r", 64),
            ("domain_id", "str", "r", 64),
            ("name", "str", "r", 255),
            ("failed_auth_count", "int", "n", None),
            ("failed_auth_at", "datetime", "n", None),
        ),
        _table(
            "password",
            ("id", "int", "", None),
            ("local_user_id", "int", "r", None),
            ("expires_at", "datetime", "n", None),
            ("self_service", "bool", "", None),
            ("password_hash", "str", "n", 255),
            ("created_at_int", "int", "b", None),
            ("expires_at_int", "int", "nb", None),
            ("created_at", "datetime", "r", None),
        ),
        _table(
            "user_option",
            ("user_id", "str", "r", 64),
            ("option_id", "str", "r", 4),
            ("option_value", "str", "n", None),
        ),
        _table(
            "group",
            ("id", "str", "r", 64),
            ("domain_id", "str", "r", 64),
            ("name", "str", "r", 64),
            ("description", "str", "n", None),
            ("extra", "str", "n", None),
        ),
        _table(
            "project",
            ("id", "str", "r", 64),
            ("name", "str", "r", 64),
            ("extra", "str", "n", None),
            ("description", "str", "n", None),
            ("enabled", "bool", "n", None),
            ("domain_id", "str", "r", 64),
            ("parent_id", "str", "n", 64),
            ("is_domain", "bool", "", None),
        ),
        _table(
            "role",
            ("id", "str", "r", 64),
            ("name", "str", "r", 255),
            ("extra", "str", "n", None),
            ("domain_id", "str", "", 64),
            ("description", "str", "n", 255),
        ),
        _table(
            "revocation_event",
            ("id", "int", "", None),
            ("domain_id", "str", "n", 64),
            ("project_id", "str", "n", 64),
            ("user_id", "str", "n", 64),
            ("role_id", "str", "n", 64),
            ("trust_id", "str", "n", 64),
            ("consumer_id", "str", "n", 64),
            ("access_token_id", "str", "n", 64),
            ("issued_before", "datetime", "r", None),
            ("expires_at", "datetime", "n", None),
            ("revoked_at", "datetime", "r", None),
            ("audit_id", "str", "n", 32),
            ("audit_chain_id", "str", "n", 32),
        ),
    )
}
