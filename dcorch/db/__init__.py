"""Persistence: the dcorch schema on SQLite and PostgreSQL, behind one `Database` face.

Open with :func:`open_database`, migrate with :mod:`dcorch.db.migrate`; all is re-exported here.
"""

from __future__ import annotations

from dcorch.db.database import Database as Database
from dcorch.db.database import open_database as open_database
from dcorch.db.errors import DatabaseError as DatabaseError
from dcorch.db.errors import DatabaseUnavailable as DatabaseUnavailable
from dcorch.db.errors import IntegrityConflict as IntegrityConflict
from dcorch.db.errors import SchemaOutOfDate as SchemaOutOfDate
from dcorch.db.errors import SubcloudAlreadyExists as SubcloudAlreadyExists
from dcorch.db.errors import SubcloudNotFound as SubcloudNotFound
from dcorch.db.errors import SubcloudSyncNotFound as SubcloudSyncNotFound
from dcorch.db.rows import PendingRequest as PendingRequest
from dcorch.db.rows import PurgeCounts as PurgeCounts
from dcorch.db.rows import RequestUpdate as RequestUpdate
from dcorch.db.rows import ResourceRow as ResourceRow
from dcorch.db.rows import SubcloudResourceRow as SubcloudResourceRow
from dcorch.db.rows import SubcloudRow as SubcloudRow
from dcorch.db.rows import SubcloudSyncRow as SubcloudSyncRow
from dcorch.db.runner import DatabaseStatistics as DatabaseStatistics
