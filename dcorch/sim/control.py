"""The ``/sim/...`` control and inspection API (no token: it is the test harness's back door).

``GET  /sim/master/state``                     the master's state
``GET  /sim/master/status-reports``            reports (``?region=&endpoint_type=``)
``GET|PUT|DELETE /sim/master/faults/<service>`` faults of one master service (``keystone``,
                                               ``sysinv``, ``dcdbsync``, ``dcmanager``)
``GET  /sim/subclouds``                        ``{"count", "regions"}``
``POST /sim/subclouds``                        ``{"count": N}`` and/or ``{"regions": [...]}``
``DELETE /sim/subclouds/<region>``             forget a subcloud
``GET  /sim/subclouds/<region>/state``         a subcloud's state, counters, operations log
``GET|PUT|DELETE /sim/subclouds/<region>/faults``
``GET  /sim/subclouds/<region>/convergence``   differences from the master
"""

from __future__ import annotations

from typing import Any

from dcorch.sim import dcmanager
from dcorch.sim.convergence import ConvergenceCheck
from dcorch.sim.endpoints import SERVICE_VERSIONS
from dcorch.sim.faults import Faults, FaultState, current_time
from dcorch.sim.http import HttpError, Request, Response, empty_response, json_response
from dcorch.sim.routes import RouteTable
from dcorch.sim.state import CloudState

Params = tuple[str, ...]


def dump_state(cloud: CloudState) -> dict[str, Any]:
    """Everything a test may want to look at, as plain JSON-able data."""
    identity, platform = cloud.identity, cloud.platform
    return {
        "region": cloud.region,
        "users": list(identity.users.values()),
        "groups": list(identity.groups.values()),
        "projects": list(identity.projects.values()),
        "roles": list(identity.roles.values()),
        "assignments": [
            {"project_id": p, "actor_type": t, "actor_id": a, "role_id": r}
            for p, t, a, r in sorted(identity.assignments)
        ],
        "revocation_events": list(identity.revocations.values()),
        "certificates": list(platform.certificates.values()),
        "iuser": platform.iuser,
        "fernet_keys": [{"id": i, "key": k} for i, k in sorted(platform.fernet_keys.items())],
        "counters": dict(cloud.counters or {}),
        "operations": cloud.operations,
        "faults": cloud.faults.faults.as_json() if cloud.faults else Faults().as_json(),
    }


def set_faults(cloud: CloudState, faults: Faults) -> None:
    """Install faults on a cloud now (flapping phases count from this moment)."""
    cloud.faults = None if faults.is_clear else FaultState(faults, cloud.region, current_time())


def set_master_faults(cloud: CloudState, service: str, faults: Faults) -> None:
    """Install faults on one of the master's services (``cloud`` is any cloud of the sim).

    Raises:
        ValueError: ``service`` is not one of the master's.
    """
    if service not in SERVICE_VERSIONS:
        raise ValueError(f"unknown master service {service!r}: one of {sorted(SERVICE_VERSIONS)}")
    if faults.is_clear:
        cloud.sim.master_faults.pop(service, None)
    else:
        state = FaultState(faults, f"{cloud.sim.master.region}/{service}", current_time())
        cloud.sim.master_faults[service] = state


def master_faults(cloud: CloudState, req: Request, params: Params) -> Response:
    service = params[0]
    if service not in SERVICE_VERSIONS:
        raise HttpError(404, f"unknown master service {service}")
    if req.method == "PUT":
        try:
            set_master_faults(cloud, service, Faults.from_json(req.json()))
        except ValueError as exc:
            raise HttpError(400, str(exc)) from None
    elif req.method == "DELETE":
        set_master_faults(cloud, service, Faults())
    current = cloud.sim.master_faults.get(service)
    return json_response(200, (current.faults if current else Faults()).as_json())


def _subcloud(cloud: CloudState, region: str) -> CloudState:
    sub = cloud.sim.subclouds.get(region)
    if sub is None:
        raise HttpError(404, f"unknown subcloud {region}")
    return sub


def master_state(cloud: CloudState, req: Request, params: Params) -> Response:
    return json_response(200, dump_state(cloud.sim.master))


def status_reports(cloud: CloudState, req: Request, params: Params) -> Response:
    found = dcmanager.reports(cloud.sim, req.query.get("region"), req.query.get("endpoint_type"))
    return json_response(200, {"count": cloud.sim.report_count, "reports": found})


def list_subclouds(cloud: CloudState, req: Request, params: Params) -> Response:
    regions = list(cloud.sim.subclouds)
    return json_response(200, {"count": len(regions), "regions": regions})


def add_subclouds(cloud: CloudState, req: Request, params: Params) -> Response:
    body = req.json()
    count = body.get("count", 0) if isinstance(body, dict) else None
    names = body.get("regions", []) if isinstance(body, dict) else None
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        raise HttpError(400, "count must be a non-negative integer")
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise HttpError(400, "regions must be a list of names")
    if any("/" in n for n in names):
        raise HttpError(400, "a region name must not contain '/'")
    added = cloud.sim.add_subclouds(count, names)
    return json_response(201, {"added": added, "count": len(cloud.sim.subclouds)})


def delete_subcloud(cloud: CloudState, req: Request, params: Params) -> Response:
    _subcloud(cloud, params[0])
    cloud.sim.remove_subcloud(params[0])
    return empty_response(204)


def subcloud_state(cloud: CloudState, req: Request, params: Params) -> Response:
    return json_response(200, dump_state(_subcloud(cloud, params[0])))


def faults(cloud: CloudState, req: Request, params: Params) -> Response:
    sub = _subcloud(cloud, params[0])
    if req.method == "PUT":
        try:
            set_faults(sub, Faults.from_json(req.json()))
        except ValueError as exc:
            raise HttpError(400, str(exc)) from None
    elif req.method == "DELETE":
        set_faults(sub, Faults())
    current = sub.faults.faults if sub.faults else Faults()
    return json_response(200, current.as_json())


def convergence(cloud: CloudState, req: Request, params: Params) -> Response:
    sub = _subcloud(cloud, params[0])
    ignore = [c for c in req.query.get("ignore", "").split(",") if c]
    try:
        diff = ConvergenceCheck(cloud.sim, ignore).differences(sub)
    except ValueError as exc:
        raise HttpError(400, str(exc)) from None
    return json_response(200, {"converged": not diff, "differences": diff})


ROUTES = RouteTable("sim", HttpError, count=False)
ROUTES.add("master/state", GET=master_state)
ROUTES.add("master/status-reports", GET=status_reports)
ROUTES.add("master/faults/{}", GET=master_faults, PUT=master_faults, DELETE=master_faults)
ROUTES.add("subclouds", GET=list_subclouds, POST=add_subclouds)
ROUTES.add("subclouds/{}", DELETE=delete_subcloud)
ROUTES.add("subclouds/{}/state", GET=subcloud_state)
ROUTES.add("subclouds/{}/faults", GET=faults, PUT=faults, DELETE=faults)
ROUTES.add("subclouds/{}/convergence", GET=convergence)
