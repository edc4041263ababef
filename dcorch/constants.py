"""Names and states shared by every part of dcorch (docs/behaviour.md#tables, #states).

The real system's strings: operators' tools read them from the database, so never rename them.
"""

from __future__ import annotations

from typing import Final

# Endpoint types (one proxy listener and one subcloud_sync row per synced type).
ENDPOINT_TYPE_PLATFORM: Final = "platform"
ENDPOINT_TYPE_IDENTITY: Final = "identity"
ENDPOINT_TYPE_USM: Final = "usm"
SYNC_ENDPOINT_TYPES: Final = (ENDPOINT_TYPE_PLATFORM, ENDPOINT_TYPE_IDENTITY)

# subcloud.management_state / availability_status
MANAGEMENT_MANAGED: Final = "managed"
MANAGEMENT_UNMANAGED: Final = "unmanaged"
AVAILABILITY_ONLINE: Final = "online"
AVAILABILITY_OFFLINE: Final = "offline"

# subcloud.initial_sync_state
INITIAL_SYNC_NONE: Final = "none"
INITIAL_SYNC_REQUESTED: Final = "requested"
INITIAL_SYNC_IN_PROGRESS: Final = "in-progress"
INITIAL_SYNC_COMPLETED: Final = "completed"
INITIAL_SYNC_FAILED: Final = "failed"

# subcloud_sync.sync_request
SYNC_REQUEST_NONE: Final = "none"
SYNC_REQUEST_REQUESTED: Final = "requested"
SYNC_REQUEST_IN_PROGRESS: Final = "in-progress"
SYNC_REQUEST_COMPLETED: Final = "completed"
SYNC_REQUEST_FAILED: Final = "failed"

# subcloud_sync.audit_status
AUDIT_NONE: Final = "none"
AUDIT_IN_PROGRESS: Final = "in-progress"
AUDIT_COMPLETED: Final = "completed"
AUDIT_FAILED: Final = "failed"

# subcloud_sync.sync_status_reported (what was last told to dcmanager)
SYNC_STATUS_NONE: Final = "none"
SYNC_STATUS_IN_SYNC: Final = "in-sync"
SYNC_STATUS_OUT_OF_SYNC: Final = "out-of-sync"

# orch_request.state
ORCH_REQUEST_QUEUED: Final = "queued"
ORCH_REQUEST_IN_PROGRESS: Final = "in-progress"
ORCH_REQUEST_COMPLETED: Final = "completed"
ORCH_REQUEST_FAILED: Final = "failed"
ORCH_REQUEST_TIMED_OUT: Final = "timed-out"
ORCH_REQUEST_ABORTED: Final = "aborted"
ORCH_REQUEST_PENDING_STATES: Final = (
    ORCH_REQUEST_QUEUED,
    ORCH_REQUEST_IN_PROGRESS,
    ORCH_REQUEST_FAILED,
)

# orch_job.operation_type
OPERATION_CREATE: Final = "create"
OPERATION_POST: Final = "post"
OPERATION_PUT: Final = "put"
OPERATION_PATCH: Final = "patch"
OPERATION_DELETE: Final = "delete"
OPERATION_ACTION: Final = "action"

# resource.resource_type
RESOURCE_USERS: Final = "users"
RESOURCE_GROUPS: Final = "groups"
RESOURCE_PROJECTS: Final = "projects"
RESOURCE_ROLES: Final = "roles"
RESOURCE_PROJECT_ROLE_ASSIGNMENTS: Final = "project_role_assignments"
RESOURCE_REVOKE_EVENTS: Final = "revoke_events"
RESOURCE_REVOKE_EVENTS_FOR_USER: Final = "revoke_events_for_user"
RESOURCE_CERTIFICATES: Final = "certificates"
RESOURCE_IUSER: Final = "iuser"
RESOURCE_FERNET_REPO: Final = "fernet_repo"

# subcloud_resource.shared_config_state
SHARED_CONFIG_MANAGED: Final = "managed"
SHARED_CONFIG_UNMANAGED: Final = "unmanaged"

# The master region's own name (keystone_authtoken.region_name upstream).
MASTER_REGION_NAME: Final = "RegionOne"
