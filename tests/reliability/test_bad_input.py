"""Bad input: random bodies, bytes, headers and paths never get a 5xx from dcorch itself.

The harness runs in a thread of its own (``threaded_dcorch``) because hypothesis and
schemathesis drive synchronous tests. For every generated request: the answer is not a 5xx made
by dcorch (a 5xx relayed from the master is allowed: the proxy relays the master's body, whose
JSON has keystone's ``{"error": {"code": ...}}`` shape, while dcorch's own errors are
``{"error": <str>, "detail": ...}``), a rejected request changes nothing in the database, and no
secret we sent shows up in any log line.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.core.result import Ok

from .conftest import ThreadedDcorch

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

SECRET = "Sup3r-Secret-Pw-8472"
FIGURES = {"inputs": 0, "dcorch_5xx": 0, "relayed_5xx": 0}
EXAMPLES = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)
api_fields = st.sampled_from(
    [
        "subcloud",
        "management_ip",
        "software_version",
        "management_state",
        "availability_status",
        "initial_sync_state",
        "password",
        "x",
    ]
)
api_bodies = st.one_of(
    st.dictionaries(api_fields, json_values, max_size=4).map(lambda d: json.dumps(d).encode()),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=200),
)
# Printable ASCII without surrounding blanks: anything else is refused by httpx itself.
header_values = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40
).map(str.strip)


def _snapshot(t: ThreadedDcorch) -> tuple[Any, ...]:
    """What a request could change: subcloud states, sync pairs, work (not audit timestamps)."""

    async def read() -> tuple[Any, ...]:
        db = t.dc.db
        subclouds = [
            (
                s.region_name,
                s.software_version,
                s.management_state,
                s.availability_status,
                s.initial_sync_state,
                s.management_ip,
                s.endpoint_types,
            )
            for s in await db.list_subclouds()
        ]
        pairs = sorted((s.subcloud_name, s.endpoint_type) for s in await db.list_subcloud_syncs())
        return (subclouds, pairs, await db.count_requests_by_state())

    return t.call(read)


def _is_dcorch_error(response: httpx.Response) -> bool:
    try:
        body = response.json()
    except ValueError:
        return True
    return isinstance(body, dict) and isinstance(body.get("error"), str)


def _tally(response: httpx.Response) -> None:
    FIGURES["inputs"] += 1
    if response.status_code >= 500:
        if _is_dcorch_error(response):
            FIGURES["dcorch_5xx"] += 1
        else:
            FIGURES["relayed_5xx"] += 1


def _assert_no_secret_logged(caplog: pytest.LogCaptureFixture, t: ThreadedDcorch) -> None:
    for record in caplog.records:
        text = record.getMessage()
        assert SECRET not in text, text
        assert t.dc.token not in text, text


@pytest.fixture
def http() -> Any:
    with httpx.Client(timeout=30) as client:
        yield client


@EXAMPLES
@given(
    method=st.sampled_from(["POST", "PUT"]),
    path=st.sampled_from(["", "/subcloud1", "/subcloud1/initial-sync", "/nobody"]),
    body=api_bodies,
    content_type=st.sampled_from(["application/json", "text/plain", "", "application/x-evil"]),
)
def test_api_rejects_bad_bodies_cleanly(
    threaded_dcorch: ThreadedDcorch, http: httpx.Client, caplog, method, path, body, content_type
) -> None:
    caplog.set_level(logging.INFO)
    t = threaded_dcorch
    before = _snapshot(t)
    headers = {**t.dc.auth, "Content-Type": content_type}
    url = f"{t.dc.api_url}/v1.0/admin/subclouds{path}"
    response = http.request(method, url, content=body, headers=headers)
    _tally(response)
    assert response.status_code < 500, (method, path, body, response.text)
    _assert_no_secret_logged(caplog, t)
    if response.status_code >= 400:
        assert _snapshot(t) == before
        assert isinstance(response.json()["detail"], str)
    else:
        # An accepted change is undone so the next example starts from the same state.
        if method == "POST":
            added = response.json()["added"]["subcloud"]
            t.call(t.dc.db.delete_subcloud, added)


@EXAMPLES
@given(
    method=st.sampled_from(["GET", "POST", "PATCH", "PUT", "DELETE", "HEAD", "OPTIONS"]),
    path=st.one_of(
        st.sampled_from(["/v3/users", "/v3/users/x", "/v3/auth/tokens", "/v3/projects", "/v3"]),
        st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789/._-%?=&", max_size=40).map(
            lambda s: "/" + s
        ),
    ),
    body=api_bodies,
    extra=st.dictionaries(
        st.sampled_from(["X-Subject-Token", "Content-Length-X", "User-Agent", "Accept", "X-Foo"]),
        header_values,
        max_size=3,
    ),
)
def test_proxy_survives_random_requests(
    threaded_dcorch: ThreadedDcorch, http: httpx.Client, caplog, method, path, body, extra
) -> None:
    caplog.set_level(logging.INFO)
    t = threaded_dcorch
    headers = {**extra, **t.dc.auth, "Content-Type": "application/json"}
    if method in ("POST", "PATCH", "PUT"):
        # Put the secret where a careless log line would show it.
        data = json.dumps({"user": {"name": "fz", "password": SECRET}}).encode() + body
    else:
        data = body
    response = http.request(method, t.dc.identity_url + path, content=data, headers=headers)
    _tally(response)
    assert not (response.status_code >= 500 and _is_dcorch_error(response)), (
        method,
        path,
        response.status_code,
        response.text,
    )
    _assert_no_secret_logged(caplog, t)


def test_openapi_fuzz_has_no_server_errors(threaded_dcorch: ThreadedDcorch) -> None:
    """Schemathesis cases (valid and invalid) for every operation of GET /openapi.json.

    The cases are drawn from each operation's hypothesis strategy rather than through
    schemathesis' pytest plugin, whose lazy fixture loading does not work with pytest 9.
    """
    t = threaded_dcorch
    schema = schemathesis.openapi.from_url(t.dc.api_url + "/openapi.json")
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result.err()
        operations.append(result.ok())
    assert operations
    cases = st.one_of(
        [
            operation.as_strategy(mode)
            for operation in operations
            for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE)
        ]
    )

    @settings(
        max_examples=12 * len(operations),
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
    )
    @given(case=cases)
    def fuzz(case: Any) -> None:
        before = _snapshot(t)
        response = case.call(base_url=t.dc.api_url, headers=t.dc.auth, timeout=30)
        FIGURES["inputs"] += 1
        if response.status_code >= 500:
            FIGURES["dcorch_5xx"] += 1
        assert response.status_code < 500, (case.method, case.formatted_path, response.text)
        if response.status_code >= 400:
            assert _snapshot(t) == before, (case.method, case.formatted_path)
        elif case.method == "POST":
            t.call(t.dc.db.delete_subcloud, response.json()["added"]["subcloud"])

    fuzz()
    print(f"\nbad input: {FIGURES}")
