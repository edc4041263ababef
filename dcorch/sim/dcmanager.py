"""The dcmanager side dcorch reports to: ``update_subcloud_endpoint_status`` as REST.

Upstream an RPC cast to dcmanager-state; here ``POST .../subclouds/<region>/endpoint_status``
(under ``/master/dcmanager/v1.0``) with ``{"endpoint_type", "sync_status", "alarmable"}``.
Reports are kept with a global sequence number so tests can count re-announcements and check
de-duplication; per-pair history is a ring bounded for long benches, ``report_count`` is not.
"""

from __future__ import annotations

import collections
from typing import Any, Final

from dcorch.sim.endpoints import DCMANAGER
from dcorch.sim.http import Request, Response, SysinvError, json_response
from dcorch.sim.keystone_auth import require_token
from dcorch.sim.routes import RouteTable
from dcorch.sim.state import CloudState, SimState

Params = tuple[str, ...]
REPORTS_PER_PAIR: Final = 10_000
SYNC_STATUSES: Final = frozenset({"in-sync", "out-of-sync", "unknown"})


def endpoint_status(cloud: CloudState, req: Request, params: Params) -> Response:
    """Record one endpoint sync-status report; 404 for an unknown subcloud."""
    require_token(cloud, req, SysinvError)
    region = params[0]
    sim = cloud.sim
    if region not in sim.subclouds:
        raise SysinvError(404, f"Subcloud {region} not found")
    body = req.json(SysinvError)
    if not isinstance(body, dict):
        raise SysinvError(400, "body must be a JSON object")
    endpoint, status = body.get("endpoint_type"), body.get("sync_status")
    if not isinstance(endpoint, str) or not endpoint:
        raise SysinvError(400, "endpoint_type is required")
    if status not in SYNC_STATUSES:
        raise SysinvError(400, f"sync_status must be one of {sorted(SYNC_STATUSES)}")
    alarmable = body.get("alarmable", True)
    if not isinstance(alarmable, bool):
        raise SysinvError(400, "alarmable must be a boolean")
    report = add_report(sim, region, endpoint, str(status), alarmable)
    return json_response(200, report)


def add_report(
    sim: SimState, region: str, endpoint: str, status: str, alarmable: bool
) -> dict[str, Any]:
    """Store a report and return it (also used in-process)."""
    sim.report_count += 1
    report = {
        "seq": sim.report_count,
        "region": region,
        "endpoint_type": endpoint,
        "sync_status": status,
        "alarmable": alarmable,
    }
    ring = sim.reports.get((region, endpoint))
    if ring is None:
        ring = sim.reports[(region, endpoint)] = collections.deque(maxlen=REPORTS_PER_PAIR)
    ring.append(report)
    return report


def reports(
    sim: SimState, region: str | None = None, endpoint: str | None = None
) -> list[dict[str, Any]]:
    """Stored reports in sequence order, optionally for one region and/or endpoint type."""
    out = [
        r
        for (reg, ept), ring in sim.reports.items()
        if region in (None, reg) and endpoint in (None, ept)
        for r in ring
    ]
    out.sort(key=lambda r: int(r["seq"]))
    return out


def latest_status(sim: SimState, region: str, endpoint: str) -> str | None:
    """The last reported sync status of a pair, or None if never reported."""
    ring = sim.reports.get((region, endpoint))
    return str(ring[-1]["sync_status"]) if ring else None


ROUTES = RouteTable(DCMANAGER, SysinvError)
ROUTES.add("subclouds/{}/endpoint_status", POST=endpoint_status)
