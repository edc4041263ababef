"""The subcloud lifecycle: one implementation behind both front doors.

dcmanager drives it by RPC (``dcorch.rpc.dcmanager_endpoint``, upstream's engine-worker
methods), operators and tests by the v1 API (``dcorch.api.app``). Both call the same methods
here, so a subcloud added, managed or deleted either way ends in the same rows and wakes the
engine the same way (docs/behaviour.md#subcloud-lifecycle).

Each method checks every value before it changes anything (a refusal is :class:`InvalidInput`,
naming the problem, with nothing written), then writes through the one :class:`Database` face
and tells the engine (:class:`SubcloudEvents`). The front doors only turn their wire format into
typed arguments (JSON bodies, RPC keyword arguments) and the errors into their own answers; the
database errors a method raises are re-exported here (:class:`SubcloudNotFound`,
:class:`SubcloudAlreadyExists`, :class:`DatabaseUnavailable`, :class:`DatabaseError`), so a
front door need not import the store.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import trio

from dcorch import constants as c
from dcorch.db.database import Database
from dcorch.db.errors import DatabaseError as DatabaseError
from dcorch.db.errors import DatabaseUnavailable as DatabaseUnavailable
from dcorch.db.errors import SubcloudAlreadyExists as SubcloudAlreadyExists
from dcorch.db.errors import SubcloudNotFound as SubcloudNotFound
from dcorch.db.rows import SERVICES, GivenEndpoints, SubcloudRow
from dcorch.text import storable_text
from dcorch.urls import service_url_problem

logger = logging.getLogger(__name__)

REGION_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,254}"
"""A region name, whole (``fullmatch``); the v1 API's OpenAPI document declares the same."""
_REGION_PATTERN = re.compile(REGION_PATTERN)
NAME_LENGTH = 255
"""``subcloud.region_name`` and ``software_version`` are VARCHAR(255)."""
IP_LENGTH = 64
"""``subcloud.management_ip`` is VARCHAR(64) (an IPv6 address with a long zone id is not)."""

MANAGEMENT_STATES = (c.MANAGEMENT_MANAGED, c.MANAGEMENT_UNMANAGED)
AVAILABILITY_STATES = (c.AVAILABILITY_ONLINE, c.AVAILABILITY_OFFLINE)

SERVICES_NEEDED = {
    c.ENDPOINT_TYPE_IDENTITY: ("keystone", "dcdbsync"),
    c.ENDPOINT_TYPE_PLATFORM: ("keystone", "sysinv"),
}
"""The subcloud services each endpoint type's sync talks to."""


class InvalidInput(ValueError):
    """A value the lifecycle refuses; the message names the problem. Nothing was changed."""


class NotNow(Exception):
    """The subcloud's state does not allow the change now (the v1 API answers 409)."""


class SubcloudEvents(Protocol):
    """Who must hear about a subcloud's change of state (the engine's sync manager)."""

    async def subcloud_changed(self, region: str) -> None: ...

    async def subcloud_deleted(self, region: str) -> None: ...


class NoEvents:
    """Events sink for a lifecycle without an engine (the API alone, tests)."""

    async def subcloud_changed(self, region: str) -> None:
        return None

    async def subcloud_deleted(self, region: str) -> None:
        return None


# -- value checks (shared by every front door) ------------------------------------------------


def _change_and_notice() -> trio.CancelScope:
    """A subcloud's change and the engine's notice of it are made together, or neither.

    A front door may be cancelled mid-change (quart-trio cancels a handler whose client
    disconnects); between the commit and the notice that left a deleted subcloud's sync actor
    spinning on the missing row, or an added one without an actor until a restart (found by
    ``./just fuzz``). Both steps are bounded (the database's retries, the manager's lock).
    """
    return trio.CancelScope(shield=True)


def check_text(value: str, name: str, max_length: int | None = None) -> str:
    """A text value the database can store as given (:mod:`dcorch.text`; a value longer than
    its column was a 500 on PostgreSQL, found by ``./just fuzz``)."""
    if not storable_text(value):
        raise InvalidInput(f"{name} holds a NUL or a lone surrogate")
    if max_length is not None and len(value) > max_length:
        raise InvalidInput(f"{name} is longer than {max_length} characters")
    return value


def check_region(region: str) -> str:
    """A region name as it appears in URLs and in ``subcloud.region_name``."""
    if not isinstance(region, str) or not _REGION_PATTERN.fullmatch(region):
        # fullmatch, not match with ``$``: ``$`` lets a final newline in
        raise InvalidInput(f"invalid subcloud region name {region!r}")
    return region


def check_ip(text: str, name: str = "management_ip") -> str:
    check_text(text, name, IP_LENGTH)
    try:
        ipaddress.ip_address(text)
    except ValueError:
        raise InvalidInput(f"{name} must be an IP address, got {text!r}") from None
    return text


def check_choice(name: str, value: str | None, choices: Sequence[str]) -> str | None:
    """None (not given) or one of ``choices``."""
    if value is not None and value not in choices:
        raise InvalidInput(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def check_endpoints(value: Mapping[str, Any]) -> dict[str, str]:
    """``{"keystone"|"sysinv"|"dcdbsync": absolute http(s) URL}``; trailing ``/`` dropped."""
    unknown = sorted(set(value) - set(SERVICES))
    if unknown:
        raise InvalidInput(
            f"endpoints: unknown service(s) {', '.join(unknown)} (known: {', '.join(SERVICES)})"
        )
    urls: dict[str, str] = {}
    for name, url in value.items():
        if not isinstance(url, str):
            raise InvalidInput(f"endpoints.{name} must be a string, got {type(url).__name__}")
        if problem := service_url_problem(url):
            raise InvalidInput(f"endpoints.{name} {problem}")
        urls[name] = url.rstrip("/")
    return urls


def _check_synced_here(name: str, item: object, enabled: Sequence[str]) -> str:
    if not isinstance(item, str):
        raise InvalidInput(f"{name} must hold strings, got {type(item).__name__}")
    if item not in enabled:
        why = " (off: master.sysinv_url is empty)" if item in c.SYNC_ENDPOINT_TYPES else ""
        raise InvalidInput(
            f"{name}: {item!r} is not synced here{why}; choose from {', '.join(enabled)}"
        )
    return item


def check_endpoint_types(
    value: Sequence[object], enabled: Sequence[str], name: str = "endpoint_types"
) -> tuple[str, ...]:
    """A non-empty subset of the endpoint types this System Controller syncs, in its order."""
    if not value:
        raise InvalidInput(f"{name} must name at least one of {', '.join(enabled)}")
    items = [_check_synced_here(name, item, enabled) for item in value]
    if len(set(items)) != len(items):
        raise InvalidInput(f"{name} must not repeat a type")
    return tuple(e for e in enabled if e in items)


def check_address(
    management_ip: str, endpoints: GivenEndpoints, endpoint_types: Sequence[str]
) -> None:
    """Without a management IP the template has no host: each needed service must be given."""
    if management_ip:
        return
    given = endpoints.given()
    needed = sorted({s for e in endpoint_types for s in SERVICES_NEEDED.get(e, ("keystone",))})
    missing = [s for s in needed if s not in given]
    if missing:
        raise InvalidInput(
            "management_ip required: the subcloud URL template builds "
            f"{', '.join(missing)} from it (or give endpoints.{', endpoints.'.join(missing)})"
        )


def _states_match(row: SubcloudRow, management: str | None, availability: str | None) -> bool:
    """Upstream's "ignored if unchanged": only the given states are compared."""
    return (management is None or management == row.management_state) and (
        availability is None or availability == row.availability_status
    )


# -- the lifecycle ------------------------------------------------------------------------------


class SubcloudLifecycle:
    """Adds, changes and deletes subclouds, then tells the engine.

    Args:
        db: the database face.
        events: the engine's sync manager (None: no engine, nobody to tell).
        endpoint_types: what this System Controller syncs (``master.sync_endpoint_types``): a new
            subcloud's default, and all an add may choose from.
        address_required: subcloud URLs come from a template on the management IP, so a
            subcloud needs one unless every service it uses is given a URL.

    Parameter names are upstream's RPC keyword arguments (``subcloud_name`` is the region).
    """

    def __init__(
        self,
        db: Database,
        *,
        events: SubcloudEvents | None = None,
        endpoint_types: Sequence[str] = c.SYNC_ENDPOINT_TYPES,
        address_required: bool = False,
    ) -> None:
        self._db = db
        self._events: SubcloudEvents = events or NoEvents()
        self.endpoint_types = tuple(endpoint_types)
        self.address_required = address_required

    async def add_subcloud(
        self,
        subcloud_name: str,
        sw_version: str = "",
        management_ip: str | None = None,
        *,
        endpoint_types: Sequence[object] | None = None,
        endpoints: Mapping[str, Any] | None = None,
    ) -> SubcloudRow:
        """A new subcloud: offline, unmanaged, nothing synced yet, one sync row per type.

        Raises :class:`~dcorch.db.errors.SubcloudAlreadyExists` for a region already there.
        """
        region = check_region(subcloud_name)
        check_text(sw_version, "sw_version", NAME_LENGTH)
        ip = "" if management_ip is None else check_ip(management_ip)
        urls = check_endpoints(endpoints or {})
        types = self.endpoint_types
        if endpoint_types is not None:
            types = check_endpoint_types(endpoint_types, self.endpoint_types)
        if self.address_required:
            check_address(ip, GivenEndpoints(**urls), types)
        with _change_and_notice():
            row = await self._db.add_subcloud(
                region,
                software_version=sw_version,
                management_ip=ip,
                endpoint_types=types,
                endpoints=urls,
            )
            logger.info("lifecycle.added region=%s endpoint_types=%s", region, ",".join(types))
            await self._events.subcloud_changed(region)
        return row

    async def del_subcloud(self, subcloud_name: str) -> None:
        """Delete a subcloud with its sync rows, mappings and requests; its actor stops.

        Raises :class:`~dcorch.db.errors.SubcloudNotFound` for an unknown region.
        """
        if not storable_text(subcloud_name):  # no row has it; the database cannot be asked
            raise SubcloudNotFound(subcloud_name)
        with _change_and_notice():
            await self._db.delete_subcloud(subcloud_name)
            logger.info("lifecycle.deleted region=%s", subcloud_name)
            await self._events.subcloud_deleted(subcloud_name)

    async def update_subcloud_states(
        self,
        subcloud_name: str,
        management_state: str | None,
        availability_status: str | None,
    ) -> SubcloudRow:
        """New states (None: keep); unchanged ones are ignored, without a write or a wake.

        Managed and online requests an initial sync, anything else cancels it; unmanaged also
        clears ``subsequent_sync`` (the database unit derives both under the row's lock).
        """
        return await self.update_subcloud(
            subcloud_name,
            management_state=management_state,
            availability_status=availability_status,
        )

    async def update_subcloud_version(self, subcloud_name: str, sw_version: str) -> SubcloudRow:
        """A new software version (after an upgrade)."""
        return await self.update_subcloud(subcloud_name, sw_version=sw_version)

    async def update_subcloud_management_ip(
        self, subcloud_name: str, management_ip: str
    ) -> SubcloudRow:
        """A new management IP: the next request builds its URLs from it."""
        return await self.update_subcloud(subcloud_name, management_ip=management_ip)

    async def update_subcloud(
        self,
        subcloud_name: str,
        *,
        sw_version: str | None = None,
        management_ip: str | None = None,
        endpoints: Mapping[str, Any] | None = None,
        management_state: str | None = None,
        availability_status: str | None = None,
    ) -> SubcloudRow:
        """Any of the above at once (the v1 API's PUT); None leaves a field as it is.

        Every value is checked, and the subcloud looked up, before anything is written.
        """
        if not storable_text(subcloud_name):  # no row has it; the database cannot be asked
            raise SubcloudNotFound(subcloud_name)
        if sw_version is not None:
            check_text(sw_version, "sw_version", NAME_LENGTH)
        if management_ip is not None:
            check_ip(management_ip)
        urls = check_endpoints(endpoints) if endpoints is not None else None
        check_choice("management_state", management_state, MANAGEMENT_STATES)
        check_choice("availability_status", availability_status, AVAILABILITY_STATES)
        row = await self._db.get_subcloud(subcloud_name)
        if self.address_required and (management_ip is not None or urls is not None):
            check_address(
                row.management_ip if management_ip is None else management_ip,
                row.endpoints if urls is None else GivenEndpoints(**urls),
                row.endpoint_types,
            )
        with _change_and_notice():
            changed = False
            if sw_version is not None or management_ip is not None or urls is not None:
                row = await self._db.update_subcloud(
                    subcloud_name,
                    software_version=sw_version,
                    management_ip=management_ip,
                    endpoints=urls,
                )
                changed = True
            if not _states_match(row, management_state, availability_status):
                row = await self._db.update_subcloud_states(
                    subcloud_name,
                    management_state=management_state,
                    availability_status=availability_status,
                )
                logger.info(
                    "lifecycle.states region=%s management=%s availability=%s initial_sync=%s",
                    subcloud_name,
                    row.management_state,
                    row.availability_status,
                    row.initial_sync_state,
                )
                changed = True
            if changed:
                await self._events.subcloud_changed(subcloud_name)
        return row

    async def add_subcloud_sync_endpoint_type(
        self, subcloud_name: str, endpoint_type_list: Sequence[object] | None = None
    ) -> SubcloudRow:
        """Sync more endpoint types; a ready subcloud audits the new ones at once.

        Only types this System Controller syncs are taken (there is no driver for another,
        e.g. upstream's ``identity_openstack``); None or empty adds nothing.
        """
        types = [
            _check_synced_here("endpoint_type_list", e, self.endpoint_types)
            for e in endpoint_type_list or ()
        ]
        if not types:
            return await self._db.get_subcloud(subcloud_name)
        with _change_and_notice():
            row = await self._db.add_sync_endpoint_types(subcloud_name, types)
            logger.info(
                "lifecycle.endpoint_types region=%s now=%s",
                subcloud_name,
                ",".join(row.endpoint_types),
            )
            await self._events.subcloud_changed(subcloud_name)
        return row

    async def remove_subcloud_sync_endpoint_type(
        self, subcloud_name: str, endpoint_type_list: Sequence[object] | None = None
    ) -> SubcloudRow:
        """Stop syncing endpoint types (types it does not sync are ignored, as upstream)."""
        types = list(endpoint_type_list or ())
        for item in types:
            if not isinstance(item, str):
                raise InvalidInput(
                    f"endpoint_type_list must hold strings, got {type(item).__name__}"
                )
        if not types:
            return await self._db.get_subcloud(subcloud_name)
        with _change_and_notice():
            row = await self._db.remove_sync_endpoint_types(subcloud_name, [str(t) for t in types])
            logger.info(
                "lifecycle.endpoint_types region=%s now=%s",
                subcloud_name,
                ",".join(row.endpoint_types),
            )
            await self._events.subcloud_changed(subcloud_name)
        return row

    async def sync_request(self, endpoint_type: str) -> int:
        """Work for this endpoint type was written: request and wake every managed pair of it.

        Returns how many pairs were woken (an endpoint type nobody syncs wakes none).
        """
        pairs = await self._db.request_sync(endpoint_type)
        logger.debug("lifecycle.sync_request endpoint=%s pairs=%d", endpoint_type, len(pairs))
        return len(pairs)

    async def request_initial_sync(self, subcloud_name: str) -> None:
        """Run the initial sync again (after it failed or completed); :class:`NotNow` unless
        the subcloud is managed and online."""
        row = await self._db.get_subcloud(subcloud_name)
        ready = (
            row.management_state == c.MANAGEMENT_MANAGED
            and row.availability_status == c.AVAILABILITY_ONLINE
        )
        if not ready:
            raise NotNow(f"subcloud {subcloud_name} is not managed and online")
        moved = False
        with _change_and_notice():
            for state in (c.INITIAL_SYNC_FAILED, c.INITIAL_SYNC_COMPLETED):
                moved = moved or await self._db.set_initial_sync_state(
                    subcloud_name, state, c.INITIAL_SYNC_REQUESTED
                )
            if moved or row.initial_sync_state == c.INITIAL_SYNC_REQUESTED:
                await self._events.subcloud_changed(subcloud_name)
        if not moved and row.initial_sync_state != c.INITIAL_SYNC_REQUESTED:
            raise NotNow(f"initial sync of {subcloud_name} is {row.initial_sync_state}")
