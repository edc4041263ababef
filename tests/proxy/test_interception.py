"""The route table and the mapping functions, without HTTP.

See docs/behaviour.md#intercepted-routes.
"""

from __future__ import annotations

import json

import pytest

from dcorch.proxy.interception import (
    Exchange,
    UnusableExchange,
    build_work_orders,
    match_route,
    payload_text,
)
from dcorch.proxy.routes import IDENTITY_ROUTES, OK_STATUSES, PLATFORM_ROUTES, ROUTES
from dcorch.work import WorkOrder

IDENTITY_OK = OK_STATUSES["identity"]
PLATFORM_OK = OK_STATUSES["platform"]
CREATED = json.dumps({"user": {"id": "new-id", "name": "n"}}).encode()


def orders_for(
    method: str,
    path: str,
    *,
    body: bytes = b"",
    status: int = 200,
    response: bytes = b"{}",
    platform: bool = False,
    audit_id: str | None = None,
    content_type: str = "",
) -> list[WorkOrder]:
    routes = PLATFORM_ROUTES if platform else IDENTITY_ROUTES
    match = match_route(routes, method, path)
    assert match is not None, f"{method} {path} is not intercepted"
    exchange = Exchange(body, content_type, status, response, audit_id)
    return build_work_orders(
        match,
        exchange,
        endpoint_type="platform" if platform else "identity",
        ok_statuses=PLATFORM_OK if platform else IDENTITY_OK,
    )


def summary(orders: list[WorkOrder]) -> list[tuple[str, str, str, object]]:
    return [
        (o.resource_type, o.operation_type, o.source_resource_id, json.loads(o.resource_info))
        for o in orders
    ]


BODY = b'{"x": {"name": "n", "password": "p"}}'
BODY_JSON = json.loads(BODY)


@pytest.mark.parametrize(
    ("method", "path", "status", "expected"),
    [
        ("POST", "/v3/users", 201, ("users", "post", "new-id", BODY_JSON)),
        ("PATCH", "/v3/users/u1", 200, ("users", "patch", "u1", BODY_JSON)),
        ("DELETE", "/v3/users/u1", 204, ("users", "delete", "u1", {})),
        ("POST", "/v3/users/u1/password", 204, ("users", "patch", "u1", BODY_JSON)),
        ("POST", "/v3/users/ab72sword/password", 204, ("users", "patch", "ab72sword", BODY_JSON)),
        ("POST", "/v3/users/drowssap/password", 204, ("users", "patch", "drowssap", BODY_JSON)),
        ("POST", "/v3/groups", 201, ("groups", "post", "new-id", BODY_JSON)),
        ("PATCH", "/v3/groups/g1", 200, ("groups", "patch", "g1", BODY_JSON)),
        ("DELETE", "/v3/groups/g1", 204, ("groups", "delete", "g1", {})),
        ("PUT", "/v3/groups/g1/users/u1", 204, ("groups", "put", "g1", {"group": {"id": "g1"}})),
        ("DELETE", "/v3/groups/g1/users/u1", 204, ("groups", "put", "g1", {"group": {"id": "g1"}})),
        ("POST", "/v3/roles", 201, ("roles", "post", "new-id", BODY_JSON)),
        ("PATCH", "/v3/roles/r1", 200, ("roles", "patch", "r1", BODY_JSON)),
        ("DELETE", "/v3/roles/r1", 204, ("roles", "delete", "r1", {})),
        ("POST", "/v3/projects", 201, ("projects", "post", "new-id", BODY_JSON)),
        ("PATCH", "/v3/projects/p1", 200, ("projects", "patch", "p1", BODY_JSON)),
        ("DELETE", "/v3/projects/p1", 204, ("projects", "delete", "p1", {})),
        (
            "PUT",
            "/v3/projects/p1/users/u1/roles/r1",
            204,
            ("project_role_assignments", "post", "p1_u1_r1", BODY_JSON),
        ),
        (
            "PUT",
            "/v3/projects/p1/groups/g1/roles/r1",
            204,
            ("project_role_assignments", "post", "p1_g1_r1", BODY_JSON),
        ),
        (
            "DELETE",
            "/v3/projects/p1/users/u1/roles/r1",
            204,
            ("project_role_assignments", "delete", "p1_u1_r1", {}),
        ),
        (
            "DELETE",
            "/v3/projects/p1/groups/g1/roles/r1",
            204,
            ("project_role_assignments", "delete", "p1_g1_r1", {}),
        ),
    ],
)
def test_identity_table(method: str, path: str, status: int, expected: tuple[object, ...]) -> None:
    orders = orders_for(method, path, body=BODY, status=status, response=CREATED)
    assert summary(orders) == [expected]
    assert orders[0].endpoint_type == "identity"
    assert orders[0].subcloud is None


def test_request_body_is_stored_as_is() -> None:
    body = b'{"user":   {"name": "\xc3\xa9",\n"password": "p"}}'
    [order] = orders_for("PATCH", "/v3/users/u1", body=body)
    assert order.resource_info == body.decode()


def test_assignment_without_body_stores_empty_object() -> None:
    [order] = orders_for("PUT", "/v3/projects/p1/users/u1/roles/r1", body=b"", status=204)
    assert order.resource_info == "{}"


def test_token_revocation_uses_the_audit_id() -> None:
    orders = orders_for("DELETE", "/v3/auth/tokens", status=204, audit_id="QmFzZTY0")
    expected = {"token_revoke_event": {"audit_id": "QmFzZTY0"}}
    assert summary(orders) == [("revoke_events", "post", "QmFzZTY0", expected)]


def test_token_revocation_without_audit_id_is_unusable() -> None:
    with pytest.raises(UnusableExchange, match="audit_id"):
        orders_for("DELETE", "/v3/auth/tokens", status=204, audit_id=None)


@pytest.mark.parametrize("status", [200, 201, 202, 204])
def test_identity_ok_statuses(status: int) -> None:
    assert orders_for("DELETE", "/v3/users/u1", status=status)


@pytest.mark.parametrize("status", [100, 203, 301, 304, 400, 401, 403, 404, 409, 500, 503])
def test_identity_not_ok_gives_nothing(status: int) -> None:
    assert orders_for("DELETE", "/v3/users/u1", status=status) == []


@pytest.mark.parametrize("status", [201, 203, 400, 404, 500])
def test_platform_not_ok_gives_nothing(status: int) -> None:
    assert orders_for("PATCH", "/v1/iuser/u", body=b"[]", status=status, platform=True) == []


@pytest.mark.parametrize(
    ("response", "reason"),
    [
        (b'{"user": {"name": "no id"}}', "response_id"),
        (b'{"user": {"id": ""}}', "response_id"),
        (b'{"user": {"id": 42}}', "response_id"),
        (b'{"links": "x"}', "response_id"),
        (b"[]", "not a JSON object"),
        (b"<html>", "not JSON"),
    ],
)
def test_create_without_usable_id_is_unusable(response: bytes, reason: str) -> None:
    with pytest.raises(UnusableExchange, match=reason):
        orders_for("POST", "/v3/users", body=BODY, status=201, response=response)


def test_create_takes_the_first_top_level_object() -> None:
    response = b'{"links": {"self": "x"}, "user": {"id": "u7"}, "other": {"id": "no"}}'
    [order] = orders_for("POST", "/v3/users", body=BODY, status=201, response=response)
    assert order.source_resource_id == "u7"


@pytest.mark.parametrize(
    "body",
    [
        b'\xef\xbb\xbf{"user": {"name": "bom"}}',
        '{"user": {"name": "utf16"}}'.encode("utf-16"),
        b'{"user": {"name": "x", "note": "\xed\xa0\x80"}}',
    ],
)
def test_a_body_the_master_reads_but_not_utf8_text_is_recorded_reserialised(body: bytes) -> None:
    """Found by ./just fuzz: keystone (Python's json) took these creates, the proxy recorded no
    work, and the subclouds never got them until an audit."""
    [order] = orders_for("PATCH", "/v3/users/u1", body=body)
    assert json.loads(order.resource_info) == json.loads(body)


@pytest.mark.parametrize("body", [b"", b"not json", b"\xff\xfe{}", b'{"a": '])
def test_non_json_request_body_is_unusable(body: bytes) -> None:
    with pytest.raises(UnusableExchange, match="request body is not JSON"):
        orders_for("PATCH", "/v3/users/u1", body=body)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v3/users"),
        ("GET", "/v3/users/u1"),
        ("DELETE", "/v3/users/u1/"),
        ("DELETE", "/v3/users/"),
        ("POST", "/v3/users/"),
        ("POST", "/v3/users/u1"),
        ("PUT", "/v3/users/u1"),
        ("POST", "/v3/users//password"),
        ("PUT", "/v3/projects/p1/users/u1/roles"),
        ("PUT", "/v3/projects/p1/users/u1/roles/"),
        ("PUT", "/v3/projects//users/u1/roles/r1"),
        ("PUT", "/v3/projects/p1/things/u1/roles/r1"),
        ("GET", "/v3/auth/tokens"),
        ("POST", "/v3/auth/tokens"),
        ("HEAD", "/v3/auth/tokens"),
        ("PATCH", "/v3/groups/g1/users/u1"),
        ("POST", "/v3/domains"),
        ("POST", "/v3/users?x=1"),
    ],
)
def test_identity_pass_through(method: str, path: str) -> None:
    assert match_route(IDENTITY_ROUTES, method, path) is None


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/certificate"),
        ("POST", "/v1/certificate"),
        ("PATCH", "/v1/certificate/c1"),
        ("GET", "/v1/iuser/u1"),
        ("DELETE", "/v1/iuser/u1"),
        ("POST", "/v1/device_images"),
        ("PATCH", "/v1/idns/d1"),
        ("POST", "/v1/loads/import_load"),
    ],
)
def test_platform_pass_through(method: str, path: str) -> None:
    assert match_route(PLATFORM_ROUTES, method, path) is None


def test_usm_intercepts_nothing() -> None:
    assert ROUTES["usm"] == ()


def test_method_match_is_case_insensitive() -> None:
    assert match_route(IDENTITY_ROUTES, "delete", "/v3/users/u1") is not None


MULTIPART = b"--b\r\n\r\n-----BEGIN CERTIFICATE-----\nMII\xff\x00\r\n--b--\r\n"
CT = "multipart/form-data; boundary=b"


def test_certificate_install_one_signature() -> None:
    response = b'{"certificates": {"signature": "ssl_1", "certtype": "ssl"}, "error": ""}'
    orders = orders_for(
        "POST",
        "/v1/certificate/certificate_install",
        body=MULTIPART,
        response=response,
        platform=True,
        content_type=CT,
    )
    [(rtype, op, rid, info)] = summary(orders)
    assert (rtype, op, rid) == ("certificates", "post", "ssl_1")
    assert isinstance(info, dict)
    assert info["content_type"] == CT
    assert info["payload"].encode("utf-8", "surrogateescape") == MULTIPART
    assert orders[0].endpoint_type == "platform"


def test_any_certificate_post_is_intercepted() -> None:
    response = b'{"certificates": {"signature": "ssl_9"}}'
    orders = orders_for(
        "POST", "/v1/certificate/renew_certificate", body=b"x", response=response, platform=True
    )
    assert [o.source_resource_id for o in orders] == ["ssl_9"]


def test_certificate_bundle_one_order_per_signature() -> None:
    response = json.dumps(
        {"certificates": [{"signature": "a"}, {"signature": "b"}, {"signature": ""}, "junk"]}
    ).encode()
    orders = orders_for(
        "POST", "/v1/certificate/certificate_install", body=b"x", response=response, platform=True
    )
    assert [o.source_resource_id for o in orders] == ["a", "b"]
    assert orders[0].resource_info == orders[1].resource_info


def test_sysinv_certificate_install_reply_of_a_partly_refused_bundle() -> None:
    """sysinv's shape: the installed records (certificate.as_dict()), the rest named in error."""
    record = {
        "id": 7,
        "uuid": "5c2a1e34-0d7e-4b8e-9f5e-2f8f0b1c3d4e",
        "certtype": "ssl_ca",
        "start_date": "2024-01-01T00:00:00+00:00",
        "expiry_date": "2034-01-01T00:00:00+00:00",
        "subject": "CN=root-a",
        "hash_subject": "123456",
    }
    response = json.dumps(
        {
            "success": "",
            "error": "Error with cert number 3 in the file: certificate is not valid ...",
            "body": "",
            "certificates": [
                {**record, "signature": "ssl_ca_1001"},
                {**record, "signature": "ssl_ca_1002", "uuid": "other"},
            ],
        }
    ).encode()
    orders = orders_for(
        "POST",
        "/v1/certificate/certificate_install",
        body=MULTIPART,
        response=response,
        platform=True,
        content_type=CT,
    )
    assert [(o.operation_type, o.source_resource_id) for o in orders] == [
        ("post", "ssl_ca_1001"),
        ("post", "ssl_ca_1002"),
    ]


@pytest.mark.parametrize(
    "response",
    [
        b'{"certificates": {}, "error": "Certificate install failed"}',
        b'{"certificates": []}',
        b'{"error": "no certificate"}',
        b"{}",
    ],
)
def test_certificate_install_without_signature_is_unusable(response: bytes) -> None:
    with pytest.raises(UnusableExchange, match="signature"):
        orders_for(
            "POST",
            "/v1/certificate/certificate_install",
            body=b"x",
            response=response,
            platform=True,
        )


def test_certificate_delete_takes_the_signature_from_the_response() -> None:
    response = b'{"uuid": "c1", "signature": "ssl_ca_5", "certtype": "ssl_ca"}'
    orders = orders_for("DELETE", "/v1/certificate/c1", response=response, platform=True)
    assert summary(orders) == [("certificates", "delete", "ssl_ca_5", {})]


@pytest.mark.parametrize(("method", "op"), [("PATCH", "patch"), ("PUT", "put")])
def test_iuser(method: str, op: str) -> None:
    body = b'[{"op": "replace", "path": "/passwd_hash", "value": "h"}]'
    orders = orders_for(method, "/v1/iuser/u-1", body=body, platform=True)
    assert summary(orders) == [("iuser", op, "u-1", {"payload": json.loads(body)})]


def test_iuser_non_json_body_is_unusable() -> None:
    with pytest.raises(UnusableExchange, match="request body is not JSON"):
        orders_for("PATCH", "/v1/iuser/u-1", body=b"passwd=x", platform=True)


@pytest.mark.parametrize("raw", [b"", b"ascii", "é€".encode(), bytes(range(256))])
def test_payload_text_round_trips_through_json(raw: bytes) -> None:
    text = json.loads(json.dumps(payload_text(raw)))
    assert text.encode("utf-8", "surrogateescape") == raw


def test_identity_sync_endpoint_is_what_the_caller_says() -> None:
    match = match_route(IDENTITY_ROUTES, "DELETE", "/v3/users/u1")
    assert match is not None
    exchange = Exchange(b"", "", 204, b"")
    [order] = build_work_orders(
        match, exchange, endpoint_type="identity_openstack", ok_statuses=IDENTITY_OK
    )
    assert order.endpoint_type == "identity_openstack"
