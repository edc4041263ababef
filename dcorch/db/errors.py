"""Typed errors of the database layer.

The hierarchy, so callers can catch as narrowly as they need::

    DatabaseError                  any failure of a unit of work that is not a bug in the caller
    ├── SubcloudNotFound           the named region has no subcloud row
    ├── SubcloudAlreadyExists      add_subcloud() for a region that already exists
    ├── SubcloudSyncNotFound       no subcloud_sync row for (region, endpoint_type)
    ├── IntegrityConflict          any other unique / foreign-key violation
    ├── DatabaseUnavailable        still failing after every retry, or the actor stopped
    └── SchemaOutOfDate            the database is not at the code's migration head

Units raise the domain errors; driver exceptions (``sqlalchemy.exc.*``) are translated into
:class:`IntegrityConflict` / :class:`DatabaseError` in one place, so nothing above ``dcorch.db``
imports SQLAlchemy to handle an error.
"""

from __future__ import annotations


class DatabaseError(Exception):
    """A unit of work failed for a reason that retrying will not fix."""


class SubcloudNotFound(DatabaseError):
    """No subcloud with that region name."""

    def __init__(self, region_name: str) -> None:
        super().__init__(f"subcloud {region_name!r} not found")
        self.region_name = region_name


class SubcloudAlreadyExists(DatabaseError):
    """A subcloud with that region name already exists."""

    def __init__(self, region_name: str) -> None:
        super().__init__(f"subcloud {region_name!r} already exists")
        self.region_name = region_name


class SubcloudSyncNotFound(DatabaseError):
    """No subcloud_sync row for that (region, endpoint type) pair."""

    def __init__(self, region_name: str, endpoint_type: str) -> None:
        super().__init__(f"no sync row for subcloud {region_name!r} endpoint {endpoint_type!r}")
        self.region_name = region_name
        self.endpoint_type = endpoint_type


class IntegrityConflict(DatabaseError):
    """A unique or foreign-key constraint rejected the unit (the transaction was rolled back)."""


class DatabaseUnavailable(DatabaseError):
    """The database could not be reached (or stayed locked) through every retry."""


class SchemaOutOfDate(DatabaseError):
    """The database schema is not at the revision this code needs; the service must not start."""

    def __init__(self, current: str | None, head: str) -> None:
        shown = current if current is not None else "none (empty database)"
        super().__init__(
            f"database at revision {shown}, code needs {head}: run `dcorch db upgrade`"
        )
        self.current = current
        self.head = head
