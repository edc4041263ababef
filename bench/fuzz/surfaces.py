"""How one input of each surface is sent and judged: the same code in CI and in the campaign.

:func:`judge` takes a snapshot of what the input's target could change, sends the input, reads
the log scan and the snapshot again, and returns the :class:`~bench.fuzz.checks.Verdict`. An
accepted input is then followed up: what it created must be readable (else it was *lost*), the
ids it created become targets for later inputs, and an accepted v1 API change is undone so
every input meets the same registered subclouds.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote, unquote, urlencode

import schemathesis
from hypothesis import strategies as st
from schemathesis.core.result import Ok

from bench.fuzz import inputs
from bench.fuzz.checks import Answer, Verdict, judge_5xx
from bench.fuzz.inputs import HttpInput, Input, RawInput
from bench.fuzz.system import FuzzSystem
from dcorch.dbsync.contract import KIND_TABLES, user_event_id
from dcorch.proxy.interception import match_route
from dcorch.proxy.routes import OK_STATUSES, ROUTES

PROXIES: Final = ("identity", "platform")
_API_PATH = re.compile(r"/v1\.0/[^/]+/subclouds(?:/(?P<region>[^/?]+))?(?P<sync>/initial-sync)?")
_DBSYNC_RECORD = re.compile(r"/identity/(?P<plural>users|groups|projects|roles)/(?P<oid>[^/?]*)")
_IDENTITY_COLLECTION = re.compile(r"/v3/(?P<plural>users|groups|projects|roles)")
_IDENTITY_OBJECT = re.compile(r"/v3/(?P<plural>users|groups|projects|roles)/(?P<oid>[^/?]+)")


def judge(system: FuzzSystem, item: Input) -> Verdict | None:
    """Send ``item`` and check everything :mod:`bench.fuzz.checks` names; None if unsendable."""
    target = item.target
    before = system.snapshot(target)
    hits, crashes = system.scan.mark()
    outcomes = system.proxied_outcomes() if target in PROXIES else {}
    if isinstance(item, RawInput):
        answer = system.send_raw(item)
        sent = item.data.split(b" ", 2)[1].decode("latin-1") if b" " in item.data else ""
        method = item.data.split(b" ", 1)[0].decode("latin-1")
    else:
        answer, sent = system.send(item)
        method = item.method
    if answer.error.startswith("unsent"):
        return None
    verdict = Verdict(answer)
    new_hits, new_crashes = system.scan.mark()
    problem = judge_5xx(
        answer,
        master_crashed=target in PROXIES and new_crashes > crashes,
        simulator=target == "dbsync-sim",
    )
    if problem:
        verdict.fail(problem, f"{answer.status} from {target}")
    if answer.error == "timeout":
        verdict.fail("hang", f"no answer from {target} within its timeout")
    if answer.error.startswith("down"):
        verdict.fail("hang", f"{target} no longer accepts connections ({answer.error})")
    if new_hits > hits:
        shown = system.scan.examples[-1] if system.scan.examples else ""
        verdict.fail("secret_logged", shown)
    after = system.snapshot(target)
    if verdict.rejected and after != before:
        verdict.fail("changed_on_rejection", f"{before} -> {after}")
    status = answer.status
    if status is not None and 200 <= status < 300:
        follow_up = FOLLOW_UPS.get(target)
        if follow_up is not None:
            follow_up(system, Sent(method, sent, item, answer, before, after, outcomes), verdict)
    elif target == "api" and status is None and after != before:
        system.restore_subclouds()  # done without an answer (the client half-closed)
    return verdict


@dataclass(frozen=True, slots=True)
class Sent:
    """An accepted input as the follow-ups need it."""

    method: str
    path: str
    """The raw path that went out (query included)."""
    item: Input
    answer: Answer
    before: Any
    after: Any
    outcomes: dict[str, float]

    def json(self) -> Any:
        try:
            return json.loads(self.answer.body)
        except (ValueError, RecursionError):
            return None

    def request_json(self) -> Any:
        """The input's body as JSON (None if it is not: a DELETE may carry anything)."""
        if not isinstance(self.item, HttpInput):
            return None
        try:
            return json.loads(self.item.body)
        except (ValueError, RecursionError):
            return None


# -- follow-ups of accepted inputs ----------------------------------------------------------------


def _api_accepted(system: FuzzSystem, sent: Sent, verdict: Verdict) -> None:
    """A created subcloud exists, an update is stored, a delete is gone; then all is undone."""
    if sent.method == "GET":
        return
    found = _API_PATH.fullmatch(sent.path.split("?")[0])
    body = sent.json()
    if sent.method == "POST" and found and not found["region"] and isinstance(body, dict):
        added = str(body.get("added", {}).get("subcloud", ""))
        if system.subcloud(added) is None:
            verdict.fail("lost", f"added subcloud {added!r} is not in the database")
    elif found and found["region"] and not found["sync"]:
        region = unquote(found["region"])
        row = system.subcloud(region)
        if sent.method == "DELETE" and row is not None:
            verdict.fail("lost", f"deleted subcloud {region!r} is still in the database")
        given = sent.request_json()
        if sent.method == "PUT" and isinstance(given, dict) and row is not None:
            for name in ("management_state", "availability_status", "software_version"):
                if name in given and getattr(row, name) != given[name]:
                    verdict.fail("lost", f"{region}.{name} is {getattr(row, name)!r}")
    system.restore_subclouds()


def _proxy_accepted(system: FuzzSystem, sent: Sent, verdict: Verdict) -> None:
    """A change the master accepted on an intercepted route has its work order committed."""
    target = sent.item.target
    path = sent.path.split("?")[0]
    status = sent.answer.status
    match = match_route(ROUTES[target], sent.method, path)
    if match is not None and status in OK_STATUSES[target]:
        jobs_before, jobs_after = sent.before[0][0], sent.after[0][0]
        unrecorded = system.proxied_outcomes().get("unrecorded", 0.0)
        if jobs_after <= jobs_before and unrecorded <= sent.outcomes.get("unrecorded", 0.0):
            verdict.fail("lost", f"{sent.method} {path} -> {status} but no work order")
    if target != "identity" or not isinstance(sent.item, HttpInput):
        return
    body = sent.json()
    created = _IDENTITY_COLLECTION.fullmatch(path)
    if sent.method == "POST" and created and isinstance(body, dict):
        kind = KIND_TABLES[created["plural"]]
        record = body.get(kind)
        if isinstance(record, dict) and isinstance(record.get("id"), str):
            system.registry.add(kind, record["id"])
    gone = _IDENTITY_OBJECT.fullmatch(path)
    if sent.method == "DELETE" and gone:
        system.registry.remove(KIND_TABLES[gone["plural"]], unquote(gone["oid"]))
    if sent.method == "POST" and path == "/v3/auth/tokens":
        token = sent.answer.header("X-Subject-Token")
        if token:
            system.tokens.append(token)
            system.scan.add(token)


def _dbsync_accepted(system: FuzzSystem, sent: Sent, verdict: Verdict) -> None:
    """A created or replaced record, or a created event, reads back from the same server."""
    target = sent.item.target
    path = sent.path.split("?")[0]
    base = system.base_url(target)
    prefix = urlsplit_path(base)
    inner = path[len(prefix) :] if path.startswith(prefix) else path
    body = sent.json()
    found = _DBSYNC_RECORD.fullmatch(inner)
    if found and sent.method in ("POST", "PUT") and isinstance(body, dict):
        plural = found["plural"]
        record = body.get(KIND_TABLES[plural])
        oid = record.get("id") if isinstance(record, dict) else None
        if not isinstance(oid, str):
            verdict.fail("lost", f"{sent.method} {inner} -> {sent.answer.status} without an id")
            return
        quoted = quote(oid.encode("utf-8", "surrogatepass"), safe="")
        read = system.http.get(
            f"{base}/identity/{plural}/{quoted}",
            headers={"X-Auth-Token": system.spare_token},
        )
        if read.status_code != 200:
            verdict.fail("lost", f"{plural} {oid!r} was stored but reads back {read.status_code}")
            return
        kind = f"{target}-{plural}"
        if sent.method == "PUT":
            system.registry.remove(kind, unquote(found["oid"]))
        system.registry.add(kind, oid)
    elif inner.startswith("/identity/token-revocation-events") and sent.method == "POST":
        event = body.get("revocation_event") if isinstance(body, dict) else None
        if not isinstance(event, dict):
            verdict.fail("lost", "an event was stored without being returned")
            return
        if event.get("audit_id"):
            by, ref = "audits", str(event["audit_id"])
        else:
            by, ref = "users", user_event_id(str(event["user_id"]), str(event["issued_before"]))
        quoted = quote(ref.encode("utf-8", "surrogatepass"), safe="")
        read = system.http.get(
            f"{base}/identity/token-revocation-events/{by}/{quoted}",
            headers={"X-Auth-Token": system.spare_token},
        )
        if read.status_code != 200:
            verdict.fail("lost", f"event {by}/{ref!r} was stored but reads back {read.status_code}")
            return
        system.registry.add(f"{target}-events", ref)


def urlsplit_path(url: str) -> str:
    """The path part of a base URL (``http://h:p/a/b`` -> ``/a/b``)."""
    rest = url.split("://", 1)[-1]
    return "/" + rest.split("/", 1)[1] if "/" in rest else ""


FOLLOW_UPS: Final[dict[str, Callable[[FuzzSystem, Sent, Verdict], None]]] = {
    "api": _api_accepted,
    "identity": _proxy_accepted,
    "platform": _proxy_accepted,
    "dbsync-sim": _dbsync_accepted,
    "dbsync-agent": _dbsync_accepted,
}


# -- the surfaces ---------------------------------------------------------------------------------


def openapi_inputs(system: FuzzSystem) -> st.SearchStrategy[HttpInput]:
    """Cases (valid and invalid) for every operation ``GET /openapi.json`` describes.

    Drawn from each operation's hypothesis strategy rather than through schemathesis' pytest
    plugin, whose lazy fixture loading does not work with pytest 9. A third of the cases get a
    registered subcloud as their region, so updates and deletes reach real rows too.
    """
    schema = schemathesis.openapi.from_url(system.dc.api_url + "/openapi.json")
    operations = []
    for result in schema.get_all_operations():
        if not isinstance(result, Ok):
            raise RuntimeError(f"/openapi.json has an operation schemathesis cannot read: {result}")
        operations.append(result.ok())
    modes = (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE)
    cases = st.one_of([op.as_strategy(mode) for op in operations for mode in modes])
    return st.builds(_case_input, cases, st.integers(0, 5))


def _case_input(case: Any, pick: int) -> HttpInput:
    if pick < 2 and "region" in (case.path_parameters or {}):
        case.path_parameters = {**case.path_parameters, "region": f"{{subcloud:{pick}}}"}
    kwargs = case.as_transport_kwargs(base_url="http://api")
    url: str = kwargs["url"].removeprefix("http://api")
    params = kwargs.get("params")
    if params:
        url += "?" + urlencode(params, doseq=True)
    headers = {str(k): str(v) for k, v in (kwargs.get("headers") or {}).items()}
    content_type = headers.pop("Content-Type", None)
    if "json" in kwargs:
        body = json.dumps(kwargs["json"]).encode("utf-8", "surrogatepass")
        content_type = content_type or "application/json"
    else:
        data = kwargs.get("data", b"")
        body = (
            data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data or b"")
        )
    # A case that sets the token itself (an invalid one, in negative mode) keeps it.
    auth = "none" if any(k.lower() == "x-auth-token" for k in headers) else "admin"
    return HttpInput(
        surface="openapi",
        target="api",
        method=str(kwargs["method"]).upper(),
        path=url,
        body=body,
        content_type=content_type,
        headers=tuple(headers.items()),
        auth=auth,
    )


def strategies(system: FuzzSystem, surfaces: list[str]) -> dict[str, st.SearchStrategy[Input]]:
    """The input strategy of each named surface (``inputs.Weights`` lists them)."""
    admin = system.dc.settings.master.username
    raw_targets = [*inputs.RAW_TARGETS, *(["dbsync-agent"] if system.agent else [])]
    makers: dict[str, Callable[[], st.SearchStrategy[Any]]] = {
        "openapi": lambda: openapi_inputs(system),
        "api": inputs.api_inputs,
        "identity": lambda: inputs.identity_inputs(admin),
        "platform": inputs.platform_inputs,
        "raw": lambda: inputs.raw_inputs(raw_targets),
        "dbsync-sim": lambda: inputs.dbsync_inputs("dbsync-sim"),
        "dbsync-agent": lambda: inputs.dbsync_inputs("dbsync-agent"),
    }
    return {name: makers[name]() for name in surfaces}
