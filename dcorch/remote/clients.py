"""Typed calls to one cloud's keystone, sysinv and dcdbsync, and to the master's dcmanager.

A :class:`CloudClient` is a cheap value (endpoints + the shared :class:`HttpSession`) built per
subcloud per pass, so a management-IP change is picked up on the next pass and only keystone
tokens are cached. The master uses it too, plus :class:`StatusReporter` for dcmanager; with a
:class:`~dcorch.remote.master_health.MasterHealth` their calls are tracked there, and an
unreachable or failing master service is raised as :class:`MasterUnavailable`.

Every method raises only :mod:`dcorch.remote.errors` exceptions (mapped in :mod:`.http`).
"""

from __future__ import annotations

import contextvars
import copy
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

import httpx
import outcome
import trio

from dcorch.remote.endpoints import MasterEndpoints, SubcloudEndpoints
from dcorch.remote.errors import PermanentSyncError, TransientSyncError
from dcorch.remote.http import HttpSession
from dcorch.remote.master_health import MasterHealth

Record = dict[str, Any]
T = TypeVar("T")

DBSYNC_KINDS: Final = {"users", "groups", "projects", "roles"}
"""dcdbsync collections holding identity DB records (keyed by the keystone id)."""
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
    health: MasterHealth | None = None
    """The master's tracker (master clients only): calls go through it."""

    @classmethod
    def for_subcloud(cls, http: HttpSession, endpoints: SubcloudEndpoints) -> CloudClient:
        return cls(http, endpoints.keystone, endpoints.sysinv, endpoints.dcdbsync)

    @classmethod
    def for_master(
        cls, http: HttpSession, endpoints: MasterEndpoints, health: MasterHealth | None = None
    ) -> CloudClient:
        return cls(http, endpoints.keystone, endpoints.sysinv, endpoints.dcdbsync, health)

    async def _call(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """One authenticated call; tracked by :attr:`health` when set."""
        return await tracked_call(self.http, self.health, method, url, self.keystone, **kwargs)

    async def _json(self, method: str, url: str, **kwargs: Any) -> Any:
        response = await self._call(method, url, **kwargs)
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
        await self._call("DELETE", url)

    async def delete_user_revoke_event(self, event_id: str) -> None:
        url = f"{self.dcdbsync}/identity/token-revocation-events/users/{event_id}"
        await self._call("DELETE", url)

    # keystone REST ---------------------------------------------------------------------------

    async def keystone_get(self, kind: str, oid: str) -> Record:
        data = await self._json("GET", f"{self.keystone}/{kind}/{oid}")
        return _unwrap(data, singular(kind))

    async def keystone_update(self, kind: str, oid: str, fields: Mapping[str, Any]) -> Record:
        """PATCH only the given fields."""
        body = {singular(kind): dict(fields)}
        data = await self._json("PATCH", f"{self.keystone}/{kind}/{oid}", json=body)
        return _unwrap(data, singular(kind))

    async def keystone_delete(self, kind: str, oid: str) -> None:
        await self._call("DELETE", f"{self.keystone}/{kind}/{oid}")

    async def grant_role(self, project: str, actor_kind: str, actor: str, role: str) -> None:
        """Grant a project role to a ``users`` or ``groups`` actor (idempotent PUT)."""
        url = f"{self.keystone}/projects/{project}/{actor_kind}/{actor}/roles/{role}"
        await self._call("PUT", url)

    async def revoke_role(self, project: str, actor_kind: str, actor: str, role: str) -> None:
        url = f"{self.keystone}/projects/{project}/{actor_kind}/{actor}/roles/{role}"
        await self._call("DELETE", url)

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
        """sysinv ``certificate_install``: a multipart upload of the PEM with its mode.

        ``pem`` and ``passphrase`` may hold the lone surrogates that stand for the upload's
        undecodable bytes (``dcorch.proxy.interception.payload_text``): they go out as those
        bytes (a strict encode crashed the sync actor on them, found by ``./just fuzz``).
        """
        raw = pem.encode("utf-8", "surrogateescape")
        files = {"file": ("cert.pem", raw, "application/x-pem-file")}
        data: dict[str, str | bytes] = {"mode": mode, "force": "true"}
        if passphrase:
            data["passphrase"] = passphrase.encode("utf-8", "surrogateescape")
        response = await self._call(
            "POST", f"{self.sysinv}/certificate/certificate_install", files=files, data=data
        )
        body = response.json() if response.content else {}
        # sysinv answers a refusal with 200 and an ``error`` text; a CA bundle it partly
        # installed has an ``error`` too, beside the certificates it did install.
        if isinstance(body, dict) and body.get("error") and not body.get("certificates"):
            raise PermanentSyncError(f"certificate install refused: {body['error']}")
        return body

    async def delete_certificate(self, uuid: str) -> None:
        await self._call("DELETE", f"{self.sysinv}/certificate/{uuid}")

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


MASTER_READ_TTL: Final = 5.0
"""Seconds a master answer is shared."""
MAX_FLIGHTS: Final = 4096
"""Past this many remembered answers, expired ones are dropped."""

current_job: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "dcorch_current_job", default=None
)
"""The ``orch_job`` id of the request being applied in this task (set by the sync actor)."""


@dataclass(eq=False, slots=True)
class _Flight:
    """One fetch of one key, shared by every caller that may use its answer."""

    generation: int | None
    """The generation it was started in; None for per-job keys, which never go stale."""
    started: float
    done: trio.Event = field(default_factory=trio.Event)
    result: outcome.Outcome[Any] | None = None


class MasterReads:
    """Master answers shared by all sync actors: one fetch serves a thousand subclouds.

    A work order fans out to every subcloud, whose drivers fetch the same master record (and
    initial syncs the same listings). Callers of a key in flight wait for that fetch; its answer
    is reused for :data:`MASTER_READ_TTL` s, each caller getting its own deep copy.

    Freshness (the stale-cache bug of 3aa52731/20f8fd05):

    * a record fetched while applying a request is keyed by its ``orch_job``, first fetched after
      the job was read (so after the master change it replicates); later jobs fetch again;
    * other answers (initial sync listings, fernet keys) are keyed by a generation bumped per
      commit (:meth:`invalidate`): a caller only gets answers fetched after the latest bump.
    """

    def __init__(self, ttl: float = MASTER_READ_TTL) -> None:
        self._ttl = ttl
        self._generation = 0
        self._flights: dict[tuple[Any, ...], _Flight] = {}
        self.fetches = 0
        self.hits = 0

    def invalidate(self) -> None:
        """The master changed: later callers need answers fetched from now on."""
        self._generation += 1
        self._flights = {k: f for k, f in self._flights.items() if f.generation is None}

    async def get(
        self, key: tuple[Any, ...], fetch: Callable[[], Awaitable[T]], *, per_job: bool = False
    ) -> T:
        """``fetch()``'s answer for ``key``, shared; ``per_job``: keyed by ``orch_job`` only."""
        generation = None if per_job else self._generation
        while True:
            flight = self._flights.get(key)
            if (
                flight is None
                or flight.generation != generation
                or (flight.result is not None and trio.current_time() - flight.started >= self._ttl)
            ):
                return await self._fetch(key, fetch, generation)
            await flight.done.wait()
            if flight.result is None:
                continue  # the fetching caller was cancelled: try again
            if isinstance(flight.result, outcome.Error):
                raise flight.result.error
            self.hits += 1
            assert isinstance(flight.result, outcome.Value)
            value: T = copy.deepcopy(flight.result.value)
            return value

    def _forget(self, key: tuple[Any, ...], flight: _Flight) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]

    async def _fetch(
        self, key: tuple[Any, ...], fetch: Callable[[], Awaitable[T]], generation: int | None
    ) -> T:
        now = trio.current_time()
        if len(self._flights) >= MAX_FLIGHTS:
            self._flights = {
                k: f
                for k, f in self._flights.items()
                if f.result is None or now - f.started < self._ttl
            }
        flight = _Flight(generation, now)
        self._flights[key] = flight
        self.fetches += 1
        try:
            value = await fetch()
        except Exception as exc:
            flight.result = outcome.Error(exc)  # shared with the waiters, never kept
            self._forget(key, flight)
            raise
        except BaseException:
            self._forget(key, flight)  # cancelled: the waiters fetch again
            raise
        else:
            flight.result = outcome.Value(value)
        finally:
            flight.done.set()
        return copy.deepcopy(value)


@dataclass(frozen=True, slots=True)
class CachedMasterClient(CloudClient):
    """The master's :class:`CloudClient` with shared reads (:class:`MasterReads`).

    ``get_record`` is shared per ``orch_job`` while a request is applied (:data:`current_job`
    set), else not; the listings (records, fernet keys, role assignments, revocation events,
    iusers, certificates) per generation; writes never.
    """

    reads: MasterReads = field(default_factory=MasterReads)

    @classmethod
    def for_master(
        cls, http: HttpSession, endpoints: MasterEndpoints, health: MasterHealth | None = None
    ) -> CachedMasterClient:
        return cls(http, endpoints.keystone, endpoints.sysinv, endpoints.dcdbsync, health)

    async def get_record(self, kind: str, oid: str) -> Record:
        fetch = super(CachedMasterClient, self).get_record
        job = current_job.get()
        if job is None:
            return await fetch(kind, oid)
        return await self.reads.get(
            ("record", job, kind, oid), lambda: fetch(kind, oid), per_job=True
        )

    async def list_records(self, kind: str) -> list[Record]:
        fetch = super(CachedMasterClient, self).list_records
        return await self.reads.get(("records", kind), lambda: fetch(kind))

    async def get_fernet_keys(self) -> list[Record]:
        fetch = super(CachedMasterClient, self).get_fernet_keys
        return await self.reads.get(("fernet_keys",), fetch)

    async def role_assignments(
        self,
        *,
        project: str | None = None,
        actor_kind: str | None = None,
        actor: str | None = None,
        role: str | None = None,
    ) -> list[Record]:
        fetch = super(CachedMasterClient, self).role_assignments
        return await self.reads.get(
            ("role_assignments", project, actor_kind, actor, role),
            lambda: fetch(project=project, actor_kind=actor_kind, actor=actor, role=role),
        )

    async def list_revoke_events(self) -> list[Record]:
        return await self.reads.get(
            ("revoke_events",), super(CachedMasterClient, self).list_revoke_events
        )

    async def list_iusers(self) -> list[Record]:
        return await self.reads.get(("iusers",), super(CachedMasterClient, self).list_iusers)

    async def list_certificates(self) -> list[Record]:
        fetch = super(CachedMasterClient, self).list_certificates
        return await self.reads.get(("certificates",), fetch)


@dataclass(frozen=True, slots=True)
class StatusReporter:
    """Sends a pair's sync status to dcmanager (``update_subcloud_endpoint_status``)."""

    http: HttpSession
    endpoints: MasterEndpoints
    health: MasterHealth | None = None

    async def report(self, region: str, endpoint_type: str, status: str, alarmable: bool) -> bool:
        """True: dcmanager answered, it has the report (``dcorch.sync.status.Reporter``)."""
        url = f"{self.endpoints.dcmanager}/subclouds/{region}/endpoint_status"
        body = {"endpoint_type": endpoint_type, "sync_status": status, "alarmable": alarmable}
        await tracked_call(self.http, self.health, "POST", url, self.endpoints.keystone, json=body)
        return True


async def tracked_call(
    http: HttpSession,
    health: MasterHealth | None,
    method: str,
    url: str,
    keystone_url: str,
    **kwargs: Any,
) -> httpx.Response:
    """``http.call``, inside ``health.attempt`` when given (the master's calls).

    A call probing a master keystone that is down first drops the cached token, so the probe
    really asks keystone (a cached token would succeed without it).
    """
    if health is None:
        return await http.call(method, url, keystone_url=keystone_url, **kwargs)
    with health.attempt(url) as attempt:
        if attempt.probes_keystone:
            http.forget_token(keystone_url)
        return await http.call(method, url, keystone_url=keystone_url, **kwargs)


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
