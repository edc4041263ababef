"""Typed calls to one cloud's keystone, sysinv and dcdbsync, and to the master's dcmanager.

A :class:`CloudClient` is a cheap value (endpoints + the shared :class:`HttpSession`); the engine
builds one per subcloud per pass from the resolver, so a management-IP change is picked up on the
next pass and nothing per subcloud is cached except its keystone token. The master uses the same
class with the master's endpoints, plus :class:`StatusReporter` for dcmanager.

Every method raises only :mod:`dcorch.engine.errors` exceptions (mapped in :mod:`.http`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from dcorch.engine.endpoints import MasterEndpoints, SubcloudEndpoints
from dcorch.engine.errors import PermanentSyncError, TransientSyncError
from dcorch.engine.http import HttpSession

Record = dict[str, Any]

DBSYNC_KINDS: Final = {"users", "groups", "projects", "roles"}
"""dcdbsync collections holding identity DB records (keyed by the keystone id)."""
KEYSTONE_KINDS: Final = {"users", "groups", "projects", "roles"}
_SINGULAR: Final = {"users": "user", "groups": "group", "projects": "project", "roles": "role"}


def singular(kind: str) -> str:
    """``users`` -> ``user`` (the key of the object in keystone bodies and dcdbsync records)."""
    return _SINGULAR[kind]


@dataclass(frozen=True, slots=True)
class CloudClient:
    """Calls to one cloud (a subcloud, or the master through :meth:`for_master`)."""

    http: HttpSession
    keystone: str
    sysinv: str
    dcdbsync: str

    @classmethod
    def for_subcloud(cls, http: HttpSession, endpoints: SubcloudEndpoints) -> CloudClient:
        return cls(http, endpoints.keystone, endpoints.sysinv, endpoints.dcdbsync)

    @classmethod
    def for_master(cls, http: HttpSession, endpoints: MasterEndpoints) -> CloudClient:
        return cls(http, endpoints.keystone, endpoints.sysinv, endpoints.dcdbsync)

    async def _json(self, method: str, url: str, **kwargs: Any) -> Any:
        response = await self.http.call(method, url, keystone_url=self.keystone, **kwargs)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError as exc:
            raise TransientSyncError(f"{method} {url}: answer is not JSON") from exc

    # dcdbsync: identity DB records, replicated with their master ids ------------------------

    async def list_records(self, kind: str) -> list[Record]:
        """All records of ``users``/``groups``/``projects``/``roles``."""
        data = await self._json("GET", f"{self.dcdbsync}/identity/{_dbsync(kind)}/")
        return _as_list(data, kind)

    async def get_record(self, kind: str, oid: str) -> Record:
        """One record by keystone id (:class:`RemoteNotFound` when absent)."""
        data = await self._json("GET", f"{self.dcdbsync}/identity/{_dbsync(kind)}/{oid}")
        return _as_record(data, kind)

    async def create_record(self, kind: str, record: Record) -> Record:
        """Insert a record keeping its ids (409 when that id already exists)."""
        data = await self._json("POST", f"{self.dcdbsync}/identity/{_dbsync(kind)}/", json=record)
        return _as_record(data, kind)

    async def replace_record(self, kind: str, oid: str, record: Record) -> Record:
        """Replace the record with id ``oid`` by ``record`` (whose id may differ)."""
        url = f"{self.dcdbsync}/identity/{_dbsync(kind)}/{oid}"
        return _as_record(await self._json("PUT", url, json=record), kind)

    async def list_revoke_events(self) -> list[Record]:
        """All token revocation events (unwrapped from ``{"revocation_event": ...}``)."""
        data = await self._json("GET", f"{self.dcdbsync}/identity/token-revocation-events/")
        return [_event(item) for item in _as_list(data, "revoke_events")]

    async def get_revoke_event(self, audit_id: str) -> Record:
        url = f"{self.dcdbsync}/identity/token-revocation-events/audits/{audit_id}"
        return _event(await self._json("GET", url))

    async def get_user_revoke_event(self, event_id: str) -> Record:
        url = f"{self.dcdbsync}/identity/token-revocation-events/users/{event_id}"
        return _event(await self._json("GET", url))

    async def create_revoke_event(self, event: Record) -> Record:
        """Store a copy of ``event`` (its ``id`` is the target's own autoincrement)."""
        url = f"{self.dcdbsync}/identity/token-revocation-events/"
        body = {"revocation_event": {k: v for k, v in event.items() if k != "id"}}
        return _event(await self._json("POST", url, json=body))

    async def delete_revoke_event(self, audit_id: str) -> None:
        url = f"{self.dcdbsync}/identity/token-revocation-events/audits/{audit_id}"
        await self.http.call("DELETE", url, keystone_url=self.keystone)

    async def delete_user_revoke_event(self, event_id: str) -> None:
        url = f"{self.dcdbsync}/identity/token-revocation-events/users/{event_id}"
        await self.http.call("DELETE", url, keystone_url=self.keystone)

    # keystone REST ---------------------------------------------------------------------------

    async def keystone_list(self, kind: str) -> list[Record]:
        data = await self._json("GET", f"{self.keystone}/{kind}")
        return list(data.get(kind, [])) if isinstance(data, dict) else []

    async def keystone_get(self, kind: str, oid: str) -> Record:
        data = await self._json("GET", f"{self.keystone}/{kind}/{oid}")
        return _unwrap(data, singular(kind))

    async def keystone_update(self, kind: str, oid: str, fields: Mapping[str, Any]) -> Record:
        """PATCH only the given fields."""
        body = {singular(kind): dict(fields)}
        data = await self._json("PATCH", f"{self.keystone}/{kind}/{oid}", json=body)
        return _unwrap(data, singular(kind))

    async def keystone_delete(self, kind: str, oid: str) -> None:
        await self.http.call("DELETE", f"{self.keystone}/{kind}/{oid}", keystone_url=self.keystone)

    async def grant_role(self, project: str, actor_kind: str, actor: str, role: str) -> None:
        """Grant a project role to a ``users`` or ``groups`` actor (idempotent PUT)."""
        url = f"{self.keystone}/projects/{project}/{actor_kind}/{actor}/roles/{role}"
        await self.http.call("PUT", url, keystone_url=self.keystone)

    async def revoke_role(self, project: str, actor_kind: str, actor: str, role: str) -> None:
        url = f"{self.keystone}/projects/{project}/{actor_kind}/{actor}/roles/{role}"
        await self.http.call("DELETE", url, keystone_url=self.keystone)

    async def role_assignments(
        self,
        *,
        project: str | None = None,
        actor_kind: str | None = None,
        actor: str | None = None,
        role: str | None = None,
    ) -> list[Record]:
        """``GET /role_assignments`` filtered by what is given."""
        params: dict[str, str] = {}
        if project:
            params["scope.project.id"] = project
        if actor_kind and actor:
            params[f"{singular(actor_kind)}.id"] = actor
        if role:
            params["role.id"] = role
        data = await self._json("GET", f"{self.keystone}/role_assignments", params=params)
        return list(data.get("role_assignments", [])) if isinstance(data, dict) else []

    # sysinv ----------------------------------------------------------------------------------

    async def list_certificates(self) -> list[Record]:
        data = await self._json("GET", f"{self.sysinv}/certificate")
        return list(data.get("certificates", [])) if isinstance(data, dict) else []

    async def install_certificate(self, pem: str, mode: str, passphrase: str | None) -> Any:
        """sysinv ``certificate_install``: a multipart upload of the PEM with its mode."""
        files = {"file": ("cert.pem", pem.encode(), "application/x-pem-file")}
        data = {"mode": mode, "force": "true"}
        if passphrase:
            data["passphrase"] = passphrase
        response = await self.http.call(
            "POST",
            f"{self.sysinv}/certificate/certificate_install",
            keystone_url=self.keystone,
            files=files,
            data=data,
        )
        body = response.json() if response.content else {}
        if isinstance(body, dict) and body.get("error"):
            raise PermanentSyncError(f"certificate install refused: {body['error']}")
        return body

    async def delete_certificate(self, uuid: str) -> None:
        await self.http.call(
            "DELETE", f"{self.sysinv}/certificate/{uuid}", keystone_url=self.keystone
        )

    async def list_iusers(self) -> list[Record]:
        data = await self._json("GET", f"{self.sysinv}/iuser")
        return list(data.get("iusers", [])) if isinstance(data, dict) else []

    async def patch_iuser(self, uuid: str, patch: Sequence[Mapping[str, Any]]) -> Record:
        data = await self._json("PATCH", f"{self.sysinv}/iuser/{uuid}", json=list(patch))
        return data if isinstance(data, dict) else {}

    async def get_fernet_keys(self) -> list[Record]:
        """The key repository as ``[{"id": int, "key": str}, ...]``."""
        data = await self._json("GET", f"{self.sysinv}/fernet_repo")
        if isinstance(data, dict):
            data = data.get("keys", [])
        return [dict(k) for k in data or []]

    async def post_fernet_keys(self, keys: Sequence[Mapping[str, Any]]) -> None:
        await self._json("POST", f"{self.sysinv}/fernet_repo", json=[dict(k) for k in keys])

    async def put_fernet_keys(self, keys: Sequence[Mapping[str, Any]]) -> None:
        await self._json("PUT", f"{self.sysinv}/fernet_repo", json=[dict(k) for k in keys])


@dataclass(frozen=True, slots=True)
class StatusReporter:
    """Sends a pair's sync status to dcmanager (``update_subcloud_endpoint_status``)."""

    http: HttpSession
    endpoints: MasterEndpoints

    async def report(self, region: str, endpoint_type: str, status: str, alarmable: bool) -> None:
        url = f"{self.endpoints.dcmanager}/subclouds/{region}/endpoint_status"
        body = {"endpoint_type": endpoint_type, "sync_status": status, "alarmable": alarmable}
        await self.http.call("POST", url, keystone_url=self.endpoints.keystone, json=body)


def _dbsync(kind: str) -> str:
    if kind not in DBSYNC_KINDS:
        raise PermanentSyncError(f"no dcdbsync collection for {kind!r}")
    return kind


def _as_list(data: Any, kind: str) -> list[Record]:
    if isinstance(data, dict):
        for key in (kind, "items", "records", "revoke_events", "events"):
            if isinstance(data.get(key), list):
                data = data[key]
                break
    if not isinstance(data, list):
        raise TransientSyncError(f"unexpected {kind} listing shape")
    return [r for r in data if isinstance(r, dict)]


def _as_record(data: Any, kind: str) -> Record:
    if not isinstance(data, dict) or not data:
        raise PermanentSyncError(f"empty {kind} record in the answer")
    return data


def _event(data: Any) -> Record:
    if isinstance(data, dict) and isinstance(data.get("revocation_event"), dict):
        return dict(data["revocation_event"])
    raise PermanentSyncError("empty revocation event in the answer")


def _unwrap(data: Any, key: str) -> Record:
    if isinstance(data, dict) and isinstance(data.get(key), dict):
        return dict(data[key])
    raise TransientSyncError(f"answer without {key!r}")


def loads_info(text: str) -> Any:
    """Parse an orch_job's ``resource_info`` (``""`` and ``null`` mean empty)."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise PermanentSyncError(f"resource_info is not JSON: {exc}") from exc
    return {} if value is None else value
