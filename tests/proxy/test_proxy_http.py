"""The proxies end to end: client -> proxy (hypercorn, port 0) -> fake master (hypercorn)."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import AsyncIterator
from functools import partial

import httpx
import pytest
import trio
import trio.testing
from cryptography.fernet import Fernet

from dcorch.metrics import Metrics
from dcorch.proxy.app import create_proxy_app, serve_proxy
from dcorch.proxy.auth import TokenCache, TokenInfo
from dcorch.proxy.redaction import RedactingFilter
from dcorch.settings import ProxySettings
from dcorch.work import WorkOrder
from tests.proxy.conftest import StartProxy
from tests.proxy.fakes import (
    ADMIN_TOKEN,
    BIG_BODY,
    MEMBER_TOKEN,
    REQUEST_ID,
    SERVICE_TOKEN,
    Canned,
    FakeMaster,
    FakeSink,
    keystone_audit_id,
    make_fernet_token,
)

ADMIN = {"X-Auth-Token": ADMIN_TOKEN}
USER_ID = "6f2b6a4fd5d54d2ca4bd7c5b1e7a2c11"
SWORD_ID = "a0b1c2d3e4f5a6b7c8d9e0f1a2b372sword"
CERT_BODY = (
    b"--boundary\r\n"
    b'Content-Disposition: form-data; name="file"; filename="server.pem"\r\n\r\n'
    b"-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC-private\n"
    b"-----END PRIVATE KEY-----\n\xff\xfe-binary\r\n"
    b"--boundary\r\n"
    b'Content-Disposition: form-data; name="mode"\r\n\r\nssl\r\n'
    b"--boundary--\r\n"
)
CERT_TYPE = "multipart/form-data; boundary=boundary"


class AlwaysAdmin:
    async def validate(self, token: str) -> TokenInfo:
        return TokenInfo(roles=frozenset({"admin"}))


def order(rtype: str, op: str, rid: str, info: object, ept: str = "identity") -> WorkOrder:
    return WorkOrder(ept, rtype, rid, op, json.dumps(info) if not isinstance(info, str) else info)


# (endpoint, method, path, body, content type) -> expected work orders
INTERCEPTED = [
    pytest.param(
        "identity",
        "POST",
        "/v3/users",
        b'{"user": {"name": "u1", "password": "Secret-1"}}',
        "application/json",
        [order("users", "post", USER_ID, '{"user": {"name": "u1", "password": "Secret-1"}}')],
        id="user-create",
    ),
    pytest.param(
        "identity",
        "PATCH",
        "/v3/users/u42",
        b'{"user": {"enabled": false}}',
        "application/json",
        [order("users", "patch", "u42", '{"user": {"enabled": false}}')],
        id="user-patch",
    ),
    pytest.param(
        "identity",
        "DELETE",
        "/v3/users/u42",
        b"",
        "",
        [order("users", "delete", "u42", "{}")],
        id="user-delete",
    ),
    pytest.param(
        "identity",
        "POST",
        f"/v3/users/{SWORD_ID}/password",
        b'{"user": {"password": "New-1", "original_password": "Old-1"}}',
        "application/json",
        [
            order(
                "users",
                "patch",
                SWORD_ID,
                '{"user": {"password": "New-1", "original_password": "Old-1"}}',
            )
        ],
        id="password-change-id-ending-in-sword",
    ),
    pytest.param(
        "identity",
        "POST",
        "/v3/groups",
        b'{"group": {"name": "g"}}',
        "application/json",
        [order("groups", "post", USER_ID, '{"group": {"name": "g"}}')],
        id="group-create",
    ),
    pytest.param(
        "identity",
        "PUT",
        "/v3/groups/g1/users/u1",
        b"",
        "",
        [order("groups", "put", "g1", {"group": {"id": "g1"}})],
        id="group-add-member",
    ),
    pytest.param(
        "identity",
        "DELETE",
        "/v3/groups/g1/users/u1",
        b"",
        "",
        [order("groups", "put", "g1", {"group": {"id": "g1"}})],
        id="group-remove-member",
    ),
    pytest.param(
        "identity",
        "POST",
        "/v3/roles",
        b'{"role": {"name": "r"}}',
        "application/json",
        [order("roles", "post", USER_ID, '{"role": {"name": "r"}}')],
        id="role-create",
    ),
    pytest.param(
        "identity",
        "DELETE",
        "/v3/projects/p9",
        b"",
        "",
        [order("projects", "delete", "p9", "{}")],
        id="project-delete",
    ),
    pytest.param(
        "identity",
        "PUT",
        "/v3/projects/p1/users/u1/roles/r1",
        b"",
        "",
        [order("project_role_assignments", "post", "p1_u1_r1", "{}")],
        id="assignment-user-put",
    ),
    pytest.param(
        "identity",
        "DELETE",
        "/v3/projects/p1/groups/g1/roles/r1",
        b"",
        "",
        [order("project_role_assignments", "delete", "p1_g1_r1", "{}")],
        id="assignment-group-delete",
    ),
    pytest.param(
        "platform",
        "POST",
        "/v1/certificate/certificate_install",
        CERT_BODY,
        CERT_TYPE,
        [
            order(
                "certificates",
                "post",
                "ssl_1234567890",
                {
                    "payload": CERT_BODY.decode("utf-8", "surrogateescape"),
                    "content_type": CERT_TYPE,
                },
                "platform",
            )
        ],
        id="certificate-install",
    ),
    pytest.param(
        "platform",
        "DELETE",
        "/v1/certificate/0c1d2e3f",
        b"",
        "",
        [order("certificates", "delete", "ssl_ca_987654321", "{}", "platform")],
        id="certificate-delete",
    ),
    pytest.param(
        "platform",
        "PATCH",
        "/v1/iuser/3c2b",
        b'[{"op": "replace", "path": "/passwd_hash", "value": "$6$x"}]',
        "application/json",
        [
            order(
                "iuser",
                "patch",
                "3c2b",
                {"payload": [{"op": "replace", "path": "/passwd_hash", "value": "$6$x"}]},
                "platform",
            )
        ],
        id="iuser-patch",
    ),
]


@pytest.mark.parametrize(("ept", "method", "path", "body", "ctype", "expected"), INTERCEPTED)
async def test_intercepted_route_submits_exactly_the_expected_orders(
    start_proxy: StartProxy,
    client: httpx.AsyncClient,
    master: FakeMaster,
    sink: FakeSink,
    ept: str,
    method: str,
    path: str,
    body: bytes,
    ctype: str,
    expected: list[WorkOrder],
) -> None:
    base = await start_proxy(ept)
    headers = dict(ADMIN, **({"Content-Type": ctype} if ctype else {}))
    response = await client.request(method, base + path, content=body, headers=headers)
    assert response.is_success
    assert sink.orders == expected
    assert sink.calls == 1
    [forwarded] = master.forwarded
    assert (forwarded.method, forwarded.path, forwarded.body) == (method, path, body)


async def test_certificate_bundle_gives_one_order_per_signature(
    start_proxy: StartProxy, client: httpx.AsyncClient, master: FakeMaster, sink: FakeSink
) -> None:
    master.certificates = [{"signature": "ssl_ca_1"}, {"signature": "ssl_ca_2"}, {"x": 1}]
    base = await start_proxy("platform")
    headers = dict(ADMIN, **{"Content-Type": CERT_TYPE})
    url = base + "/v1/certificate/certificate_install"
    response = await client.post(url, content=CERT_BODY, headers=headers)
    assert response.status_code == 200
    assert [o.source_resource_id for o in sink.orders] == ["ssl_ca_1", "ssl_ca_2"]
    assert sink.calls == 1  # one commit for the whole bundle
    info = json.loads(sink.orders[0].resource_info)
    assert info["payload"].encode("utf-8", "surrogateescape") == CERT_BODY


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 500, 201])
async def test_non_ok_master_answer_is_relayed_and_submits_nothing(
    start_proxy: StartProxy,
    client: httpx.AsyncClient,
    master: FakeMaster,
    sink: FakeSink,
    status: int,
) -> None:
    # 201 is OK for keystone but not for sysinv, so it is tested on the platform proxy.
    body = b'{"error_message": "{\\"faultstring\\": \\"nope\\"}"}'
    canned = Canned(status, body, [(b"content-type", b"application/json")])
    master.responses[("PATCH", "/v1/iuser/u1")] = canned
    base = await start_proxy("platform")
    response = await client.patch(base + "/v1/iuser/u1", content=b"[]", headers=ADMIN)
    assert response.status_code == status
    assert response.content == body  # not rewritten by any "parser"
    assert sink.calls == 0


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/v3/users", b"not json"),  # request body unusable
        ("DELETE", "/v3/users/u1/", b""),  # trailing slash: not intercepted
        ("PUT", "/v3/projects/p1/users/u1/roles/", b""),  # malformed assignment
        ("POST", "/v3/users/u1", b"{}"),  # method not intercepted on this path
    ],
)
async def test_bad_input_submits_nothing(
    start_proxy: StartProxy,
    client: httpx.AsyncClient,
    sink: FakeSink,
    method: str,
    path: str,
    body: bytes,
) -> None:
    base = await start_proxy()
    await client.request(method, base + path, content=body, headers=ADMIN)
    assert sink.calls == 0


async def test_created_without_id_submits_nothing(
    start_proxy: StartProxy, client: httpx.AsyncClient, master: FakeMaster, sink: FakeSink
) -> None:
    master.responses[("POST", "/v3/users")] = Canned(201, b'{"user": {"name": "x"}}')
    base = await start_proxy()
    response = await client.post(base + "/v3/users", content=b'{"user": {}}', headers=ADMIN)
    assert response.status_code == 201
    assert sink.calls == 0


async def test_response_is_byte_identical_to_the_master(
    start_proxy: StartProxy, client: httpx.AsyncClient, master: FakeMaster
) -> None:
    base = await start_proxy()
    body = b'{"user":  {"id": "u9",\n "name": "\xc3\xa9"}}'
    end_to_end = [
        (b"Content-Type", b"application/json; charset=UTF-8"),
        (b"X-OpenStack-Request-ID", REQUEST_ID.encode()),
        (b"Location", b"http://master/v3/users/u9"),
        (b"Set-Cookie", b"a=1"),
        (b"Set-Cookie", b"b=2"),
        (b"Date", b"Wed, 01 Jan 2020 00:00:00 GMT"),
        (b"Server", b"Apache"),
    ]
    hop_by_hop = [
        (b"Connection", b"keep-alive, x-private"),
        (b"X-Private", b"hop"),
        (b"Keep-Alive", b"timeout=5"),
    ]
    master.responses[("POST", "/v3/users")] = Canned(201, body, end_to_end + hop_by_hop)
    response = await client.post(base + "/v3/users", content=b'{"user": {}}', headers=ADMIN)
    assert response.status_code == 201
    assert response.content == body
    relayed = [(k.lower(), v) for k, v in response.headers.raw]
    expected = [(k.lower(), v) for k, v in end_to_end]
    assert [h for h in relayed if h[0] != b"content-length"] == expected
    assert response.headers.get_list("content-length") == [str(len(body))]


async def test_head_is_relayed_without_a_body(
    start_proxy: StartProxy, client: httpx.AsyncClient
) -> None:
    base = await start_proxy("usm")
    response = await client.head(base + "/v3/users", headers=ADMIN)
    assert response.status_code == 200
    assert response.content == b""


async def test_injected_client_is_used_and_left_open(
    nursery: trio.Nursery, master_url: str, sink: FakeSink, master: FakeMaster
) -> None:
    async with httpx.AsyncClient(trust_env=False) as injected:
        app = create_proxy_app(
            "usm",
            upstream_url=master_url,
            work_sink=sink,
            token_cache=TokenCache(AlwaysAdmin(), ttl=30.0),
            settings=ProxySettings(),
            http_client=injected,
        )
        stop = trio.Event()
        async with trio.open_nursery() as inner:
            urls = await inner.start(
                partial(
                    serve_proxy,
                    app,
                    "127.0.0.1",
                    0,
                    shutdown_trigger=stop.wait,
                    graceful_timeout=0.5,
                )
            )
            response = await injected.get(urls[0] + "/v3/users", headers=ADMIN)
            assert response.status_code == 200
            stop.set()
        assert not injected.is_closed
        assert [s.path for s in master.forwarded] == ["/v3/users"]


async def test_no_content_type_is_added(start_proxy: StartProxy, client: httpx.AsyncClient) -> None:
    base = await start_proxy()
    response = await client.delete(base + "/v3/users/u1", headers=ADMIN)
    assert response.status_code == 204
    assert "content-type" not in response.headers


async def test_master_sees_forwarding_headers(
    start_proxy: StartProxy, client: httpx.AsyncClient, master: FakeMaster, master_url: str
) -> None:
    base = await start_proxy()
    headers = dict(ADMIN, **{"X-Custom": "kept", "Accept": "application/json"})
    await client.get(base + "/v3/users?name=a%20b&domain_id=default", headers=headers)
    [seen] = master.forwarded
    proxy_host = httpx.URL(base).netloc.decode()
    assert seen.path == "/v3/users"
    assert seen.query == b"name=a%20b&domain_id=default"
    assert seen.header("host") == httpx.URL(master_url).netloc.decode()
    assert seen.header("x-forwarded-server") == proxy_host
    assert seen.header("x-forwarded-scheme") == "http"
    assert seen.header("x-forwarded-for") == "127.0.0.1"
    assert seen.header("x-domain-id") == ""
    assert seen.header("x-domain-name") == ""
    assert seen.header("openstack-system-scope") == ""
    assert seen.header("x-custom") == "kept"
    assert seen.header("x-auth-token") == ADMIN_TOKEN
    assert seen.header("user-agent") == client.headers["user-agent"]


async def test_existing_forwarding_and_domain_headers_are_kept(
    start_proxy: StartProxy, client: httpx.AsyncClient, master: FakeMaster
) -> None:
    base = await start_proxy()
    headers = dict(ADMIN, **{"X-Forwarded-For": "10.0.0.7", "X-Domain-Id": "default"})
    await client.get(base + "/v3/users", headers=headers)
    [seen] = master.forwarded
    assert seen.headers_named("x-forwarded-for") == ["10.0.0.7"]
    assert seen.headers_named("x-domain-id") == ["default"]


async def test_large_download_is_streamed_unchanged(
    start_proxy: StartProxy, client: httpx.AsyncClient
) -> None:
    base = await start_proxy("usm")
    async with client.stream("GET", base + "/big", headers=ADMIN) as response:
        assert response.status_code == 200
        assert response.headers["content-length"] == str(len(BIG_BODY))
        chunks = [chunk async for chunk in response.aiter_raw()]
    assert len(chunks) > 1
    assert b"".join(chunks) == BIG_BODY


async def test_large_upload_is_streamed_unchanged(
    start_proxy: StartProxy, client: httpx.AsyncClient, master: FakeMaster
) -> None:
    base = await start_proxy("usm", max_body_bytes=1024)  # the cap is for intercepted routes

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(BIG_BODY), 100_000):
            yield BIG_BODY[start : start + 100_000]

    response = await client.post(base + "/v3/echo-length", content=chunks(), headers=ADMIN)
    assert response.status_code == 200
    assert response.json()["length"] == len(BIG_BODY)
    assert master.forwarded[0].body == BIG_BODY


async def test_intercepted_body_over_the_cap_is_refused(
    start_proxy: StartProxy, client: httpx.AsyncClient, master: FakeMaster, sink: FakeSink
) -> None:
    base = await start_proxy("platform", max_body_bytes=64)
    headers = dict(ADMIN, **{"Content-Type": CERT_TYPE})
    url = base + "/v1/certificate/certificate_install"
    response = await client.post(url, content=CERT_BODY, headers=headers)
    assert response.status_code == 413
    assert "error_message" in response.json()
    assert master.forwarded == []
    assert sink.calls == 0


@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
async def test_missing_token_is_401_and_nothing_forwarded(
    start_proxy: StartProxy,
    client: httpx.AsyncClient,
    master: FakeMaster,
    sink: FakeSink,
    method: str,
) -> None:
    base = await start_proxy()
    response = await client.request(method, base + "/v3/users", content=b"{}")
    assert response.status_code == 401
    # Keystone's own shape: what keystoneauth and the openstack CLI parse.
    assert response.json() == {
        "error": {"code": 401, "title": "Unauthorized", "message": "Missing authentication token"}
    }
    assert master.forwarded == []
    assert sink.calls == 0


async def test_invalid_token_is_401_and_nothing_forwarded(
    start_proxy: StartProxy, client: httpx.AsyncClient, master: FakeMaster, sink: FakeSink
) -> None:
    base = await start_proxy()
    headers = {"X-Auth-Token": "gAAAAA-forged"}
    response = await client.post(base + "/v3/users", content=b'{"user": {}}', headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["title"] == "Unauthorized"
    assert master.forwarded == []
    assert master.validations == 1
    assert sink.calls == 0


async def test_validation_uses_the_client_token_as_both_tokens(
    start_proxy: StartProxy, client: httpx.AsyncClient, master: FakeMaster
) -> None:
    base = await start_proxy()
    await client.get(base + "/v3/users", headers=ADMIN)
    [check] = [s for s in master.seen if s.method == "GET" and s.path == "/v3/auth/tokens"]
    assert check.header("x-auth-token") == ADMIN_TOKEN
    assert check.header("x-subject-token") == ADMIN_TOKEN


KEYSTONE_403 = json.dumps(
    {
        "error": {
            "code": 403,
            "message": "You are not authorized to perform the requested action: "
            "identity:create_user.",
            "title": "Forbidden",
        }
    }
).encode()
SYSINV_403 = json.dumps({"error_message": "Access was denied to this resource."}).encode()


@pytest.mark.parametrize(
    ("endpoint", "method", "path", "body", "refusal"),
    [
        ("identity", "POST", "/v3/users", b'{"user": {"name": "u"}}', KEYSTONE_403),
        ("platform", "PATCH", "/v1/iuser/3c2b", b'[{"op": "replace"}]', SYSINV_403),
    ],
)
async def test_the_master_decides_a_non_admin_write(
    start_proxy: StartProxy,
    client: httpx.AsyncClient,
    master: FakeMaster,
    sink: FakeSink,
    metrics: Metrics,
    endpoint: str,
    method: str,
    path: str,
    body: bytes,
    refusal: bytes,
) -> None:
    """No admin rule of the proxy's own: the write reaches the master, whose 403 is relayed."""
    base = await start_proxy(endpoint)
    headers = {"X-Auth-Token": MEMBER_TOKEN, "Content-Type": "application/json"}
    master.responses[(method, path)] = Canned(
        403, refusal, [(b"content-type", b"application/json"), (b"x-master", b"policy")]
    )
    response = await client.request(method, base + path, content=body, headers=headers)
    assert response.status_code == 403
    assert response.content == refusal
    assert response.headers["x-master"] == "policy"
    [forwarded] = master.forwarded
    assert (forwarded.method, forwarded.path, forwarded.body) == (method, path, body)
    assert forwarded.header("x-auth-token") == MEMBER_TOKEN
    assert sink.calls == 0
    assert metrics.proxied_commands.values == {
        (("endpoint_type", endpoint), ("outcome", "rejected")): 1.0
    }


async def test_a_write_the_master_lets_a_non_admin_make_is_recorded(
    start_proxy: StartProxy, client: httpx.AsyncClient, master: FakeMaster, sink: FakeSink
) -> None:
    """A user changing their own password: keystone says yes, so the work is recorded."""
    base = await start_proxy()
    body = b'{"user": {"password": "New-Secret", "original_password": "Old-Secret"}}'
    headers = {"X-Auth-Token": MEMBER_TOKEN, "Content-Type": "application/json"}
    response = await client.post(
        base + "/v3/users/u-member/password", content=body, headers=headers
    )
    assert response.status_code == 204
    assert sink.orders == [order("users", "patch", "u-member", body.decode())]


async def test_a_non_admin_revoking_its_own_token_is_recorded_with_service_keys(
    start_proxy: StartProxy, client: httpx.AsyncClient, master: FakeMaster, sink: FakeSink
) -> None:
    """The keys come with dcorch's credentials, after keystone revoked the token."""
    audit = b"\x05" * 16
    own = make_fernet_token(master.fernet_keys, audit)
    master.tokens[own] = master.tokens[MEMBER_TOKEN]
    base = await start_proxy()
    response = await client.delete(
        base + "/v3/auth/tokens", headers={"X-Auth-Token": own, "X-Subject-Token": own}
    )
    assert response.status_code == 204
    audit_id = keystone_audit_id(audit)
    assert sink.orders == [
        order("revoke_events", "post", audit_id, {"token_revoke_event": {"audit_id": audit_id}})
    ]
    order_seen = [
        (s.method, s.path) for s in master.seen if s.method != "GET" or "fernet" in s.path
    ]
    assert order_seen == [("DELETE", "/v3/auth/tokens"), ("GET", "/v1/fernet_repo")]
    [fetch] = [s for s in master.seen if s.path == "/v1/fernet_repo"]
    assert fetch.header("x-auth-token") == SERVICE_TOKEN


async def test_a_revocation_keystone_refuses_fetches_no_keys_and_records_nothing(
    start_proxy: StartProxy, client: httpx.AsyncClient, master: FakeMaster, sink: FakeSink
) -> None:
    other = make_fernet_token(master.fernet_keys, b"\x06" * 16)
    base = await start_proxy()
    refusal = json.dumps(
        {
            "error": {
                "code": 403,
                "message": "You are not authorized to perform the requested action: "
                "identity:revoke_token.",
                "title": "Forbidden",
            }
        }
    ).encode()
    master.responses[("DELETE", "/v3/auth/tokens")] = Canned(
        403, refusal, [(b"content-type", b"application/json")]
    )
    response = await client.delete(
        base + "/v3/auth/tokens", headers={"X-Auth-Token": MEMBER_TOKEN, "X-Subject-Token": other}
    )
    assert response.status_code == 403
    assert response.content == refusal
    assert master.key_fetches == 0
    assert sink.calls == 0


async def test_token_validation_is_cached(
    start_proxy: StartProxy, client: httpx.AsyncClient, master: FakeMaster
) -> None:
    base = await start_proxy()
    for _ in range(3):
        assert (await client.get(base + "/v3/users", headers=ADMIN)).status_code == 200
    assert master.validations == 1


async def test_token_cache_off_revalidates(
    start_proxy: StartProxy, client: httpx.AsyncClient, master: FakeMaster
) -> None:
    base = await start_proxy(token_cache_ttl=0.0)
    for _ in range(2):
        await client.get(base + "/v3/users", headers=ADMIN)
    assert master.validations == 2


async def test_distcloud_header_skips_auth_and_interception(
    start_proxy: StartProxy, client: httpx.AsyncClient, master: FakeMaster, sink: FakeSink
) -> None:
    base = await start_proxy()
    headers = {"User-Header": "distcloud"}
    response = await client.post(base + "/v3/users", content=b'{"user": {}}', headers=headers)
    assert response.status_code == 201
    assert master.validations == 0
    assert sink.calls == 0
    assert master.forwarded[0].header("user-header") == "distcloud"


@pytest.mark.parametrize("path", ["/", "/v3", "/v3/", "/v1", "/v1/"])
async def test_version_root_needs_no_token(
    start_proxy: StartProxy, client: httpx.AsyncClient, master: FakeMaster, path: str
) -> None:
    base = await start_proxy()
    response = await client.get(base + path)
    assert response.status_code == 200
    assert response.json()["version"]["id"] == "v3.14"
    assert master.validations == 0


async def test_not_a_version_root_needs_a_token(
    start_proxy: StartProxy, client: httpx.AsyncClient
) -> None:
    base = await start_proxy("platform")
    response = await client.get(base + "/v1/isystems")
    assert response.status_code == 401
    # sysinv's clients (cgts-client) parse the parser filter's shape, not Keystone's.
    fault = json.loads(response.json()["error_message"])
    assert fault["faultstring"] == "Missing authentication token"
    assert fault["faultcode"] == "Client"


async def test_overloaded_sink_gives_503_with_retry_after(
    start_proxy: StartProxy, client: httpx.AsyncClient, master: FakeMaster, sink: FakeSink
) -> None:
    sink.overloaded_retry_after = 7
    base = await start_proxy()
    response = await client.delete(base + "/v3/users/u1", headers=ADMIN)
    assert response.status_code == 503
    assert response.headers["retry-after"] == "7"
    fault = json.loads(response.json()["error_message"])
    assert "overloaded" in fault["faultstring"]
    assert [s.method for s in master.forwarded] == ["DELETE"]  # the master change happened


async def test_failing_sink_gives_500_without_details(
    start_proxy: StartProxy, client: httpx.AsyncClient, sink: FakeSink
) -> None:
    sink.error = RuntimeError("INSERT ... password=Secret-1")
    base = await start_proxy()
    body = b'{"user": {"password": "Secret-1"}}'
    response = await client.post(base + "/v3/users", content=body, headers=ADMIN)
    assert response.status_code == 500
    assert b"Secret-1" not in response.content


@pytest.mark.parametrize("path", ["internal", "submit"])
async def test_a_500_logs_the_traceback_with_its_secrets_masked(
    start_proxy: StartProxy,
    client: httpx.AsyncClient,
    sink: FakeSink,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    path: str,
) -> None:
    # Messages as a database driver or a mapping bug would word them, quoting the body and the
    # headers. Only the proxy logger's own filter stands between them and the log.
    error = RuntimeError(
        "INSERT failed password=Pa55-Secret; body {'password': 'Pa55-Secret'}; "
        f"headers [(b'x-auth-token', b'{ADMIN_TOKEN}')]"
    )
    if path == "internal":

        def broken_mapping(*args: object, **kwargs: object) -> list[WorkOrder]:
            raise error

        monkeypatch.setattr("dcorch.proxy.handler.build_work_orders", broken_mapping)
    else:
        sink.error = error
    caplog.set_level(logging.ERROR, logger="dcorch.proxy.handler")
    base = await start_proxy()
    body = b'{"user": {"name": "u1", "password": "Pa55-Secret"}}'
    response = await client.post(base + "/v3/users", content=body, headers=ADMIN)
    assert response.status_code == 500
    text = caplog.text
    assert "Traceback (most recent call last)" in text
    assert "RuntimeError: INSERT failed" in text
    assert "Pa55-Secret" not in text
    assert ADMIN_TOKEN not in text


@pytest.mark.parametrize(
    ("fault", "status", "outcome"),
    [
        (None, 201, "committed"),
        ("master refuses", 409, "rejected"),
        ("no id in the answer", 201, "unrecorded"),
        ("sink overloaded", 503, "overloaded"),
        ("sink fails", 500, "failed"),
    ],
)
async def test_each_forwarded_command_is_counted_with_its_outcome(
    start_proxy: StartProxy,
    client: httpx.AsyncClient,
    master: FakeMaster,
    sink: FakeSink,
    metrics: Metrics,
    fault: str | None,
    status: int,
    outcome: str,
) -> None:
    if fault == "master refuses":
        master.responses[("POST", "/v3/users")] = Canned(409, b'{"error": {}}')
    elif fault == "no id in the answer":
        master.responses[("POST", "/v3/users")] = Canned(201, b'{"user": {"name": "x"}}')
    elif fault == "sink overloaded":
        sink.overloaded_retry_after = 1
    elif fault == "sink fails":
        sink.error = RuntimeError("database is locked")
    base = await start_proxy()
    assert (await client.get(base + "/v3/users", headers=ADMIN)).status_code == 200
    body = b'{"user": {"name": "u1"}}'
    response = await client.post(base + "/v3/users", content=body, headers=ADMIN)
    assert response.status_code == status
    assert metrics.proxied_commands.values == {
        (("endpoint_type", "identity"), ("outcome", outcome)): 1.0
    }


async def test_client_is_answered_only_after_submit_returns(
    start_proxy: StartProxy, client: httpx.AsyncClient, sink: FakeSink
) -> None:
    base = await start_proxy()
    sink.gate = trio.Event()
    answered: list[httpx.Response] = []

    async def call() -> None:
        answered.append(await client.delete(base + "/v3/users/u1", headers=ADMIN))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(call)
        await sink.entered.wait()
        # Everything in this process (proxy, fake master, client) has run until it waits: an
        # answer sent before submit returned would have reached the client by now.
        await trio.testing.wait_all_tasks_blocked(cushion=0.01)
        assert answered == []
        assert not sink.committed.is_set()
        sink.gate.set()
    assert answered[0].status_code == 204
    assert sink.orders == [order("users", "delete", "u1", "{}")]


async def test_work_is_recorded_even_if_the_client_goes_away(
    start_proxy: StartProxy, sink: FakeSink
) -> None:
    base = await start_proxy()
    sink.gate = trio.Event()
    async with httpx.AsyncClient(trust_env=False) as impatient:
        with trio.move_on_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(partial(impatient.delete, base + "/v3/users/u1", headers=ADMIN))
                await sink.entered.wait()
                nursery.cancel_scope.cancel()  # the client disconnects
    sink.gate.set()
    with trio.fail_after(5):
        await sink.committed.wait()
    assert [o.source_resource_id for o in sink.orders] == ["u1"]


async def test_token_revocation_submits_the_audit_id(
    start_proxy: StartProxy, client: httpx.AsyncClient, master: FakeMaster, sink: FakeSink
) -> None:
    audit = bytes(range(16))
    revoked = make_fernet_token(master.fernet_keys, audit)
    master.tokens[revoked] = master.tokens[ADMIN_TOKEN]
    base = await start_proxy()
    headers = {"X-Auth-Token": revoked, "X-Subject-Token": revoked}  # revoking its own token
    response = await client.delete(base + "/v3/auth/tokens", headers=headers)
    assert response.status_code == 204
    audit_id = keystone_audit_id(audit)
    assert sink.orders == [
        order("revoke_events", "post", audit_id, {"token_revoke_event": {"audit_id": audit_id}})
    ]
    # The revoked token was dropped from the cache: the next use is validated again.
    del master.tokens[revoked]
    response = await client.get(base + "/v3/users", headers={"X-Auth-Token": revoked})
    assert response.status_code == 401


async def test_token_revocation_after_key_rotation_refetches_keys(
    start_proxy: StartProxy, client: httpx.AsyncClient, master: FakeMaster, sink: FakeSink
) -> None:
    base = await start_proxy()
    first = make_fernet_token(master.fernet_keys, b"\x01" * 16)
    headers = dict(ADMIN, **{"X-Subject-Token": first})
    await client.delete(base + "/v3/auth/tokens", headers=headers)
    master.fernet_keys = [
        Fernet.generate_key().decode(),
        *master.fernet_keys,
    ]  # rotation: a new primary key
    second = make_fernet_token(master.fernet_keys[:1], b"\x02" * 16)
    headers = dict(ADMIN, **{"X-Subject-Token": second})
    await client.delete(base + "/v3/auth/tokens", headers=headers)
    assert [o.source_resource_id for o in sink.orders] == [
        keystone_audit_id(b"\x01" * 16),
        keystone_audit_id(b"\x02" * 16),
    ]
    assert master.key_fetches == 2


async def test_undecryptable_revoked_token_submits_nothing(
    start_proxy: StartProxy, client: httpx.AsyncClient, master: FakeMaster, sink: FakeSink
) -> None:
    base = await start_proxy()
    headers = dict(ADMIN, **{"X-Subject-Token": "not-a-fernet-token"})
    response = await client.delete(base + "/v3/auth/tokens", headers=headers)
    assert response.status_code == 204
    assert sink.calls == 0


async def test_master_unreachable_gives_502(
    nursery: trio.Nursery,
    client: httpx.AsyncClient,
    sink: FakeSink,
    master_client: httpx.AsyncClient,
) -> None:
    with trio.socket.socket() as sock:
        await sock.bind(("127.0.0.1", 0))
        dead_port = sock.getsockname()[1]
    app = create_proxy_app(
        "usm",
        upstream_url=f"http://127.0.0.1:{dead_port}",
        work_sink=sink,
        token_cache=TokenCache(AlwaysAdmin(), ttl=30.0),
        settings=dataclasses.replace(ProxySettings(), forward_timeout=5.0),
        http_client=master_client,
    )
    urls = await nursery.start(partial(serve_proxy, app, "127.0.0.1", 0))
    response = await client.get(urls[0] + "/v1/release", headers=ADMIN)
    assert response.status_code == 502
    assert "error_message" in response.json()


async def test_no_secret_reaches_the_logs(
    start_proxy: StartProxy,
    client: httpx.AsyncClient,
    master: FakeMaster,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # As the service does: the filter on the handler also covers httpcore's DEBUG traces,
    # which print raw headers (keystone's X-Subject-Token answer included).
    caplog.set_level(logging.DEBUG)
    caplog.handler.addFilter(RedactingFilter())
    identity = await start_proxy()
    platform = await start_proxy("platform")
    revoked = make_fernet_token(master.fernet_keys, b"\x07" * 16)
    await client.post(
        identity + "/v3/users",
        content=b'{"user": {"name": "u", "password": "Pa55-Secret"}}',
        headers=ADMIN,
    )
    await client.post(
        identity + f"/v3/users/{SWORD_ID}/password",
        content=b'{"user": {"password": "New-Secret", "original_password": "Pa55-Secret"}}',
        headers=ADMIN,
    )
    await client.delete(
        identity + "/v3/auth/tokens", headers=dict(ADMIN, **{"X-Subject-Token": revoked})
    )
    await client.post(
        platform + "/v1/certificate/certificate_install",
        content=CERT_BODY,
        headers=dict(ADMIN, **{"Content-Type": CERT_TYPE}),
    )
    await client.patch(
        platform + "/v1/iuser/3c2b",
        content=b'[{"op": "replace", "path": "/passwd_hash", "value": "$6$hash-secret"}]',
        headers=ADMIN,
    )
    text = caplog.text
    assert "work order users post" in text  # the log does say what happened
    for secret in [
        "Pa55-Secret",
        "New-Secret",
        "private",
        "hash-secret",
        ADMIN_TOKEN,
        revoked,
        *master.fernet_keys,
    ]:
        assert secret not in text
