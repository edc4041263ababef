"""Security: no, expired, revoked and non-admin tokens are refused and enqueue nothing.

Bad tokens are the proxy's own 401; a non-admin's writes are refused by the master keystone's
policy, whose 403 the proxy relays (docs/behaviour.md#proxy-pipeline).
"""

from __future__ import annotations

from typing import Any

import pytest

from dcorch.harness import Dcorch, open_dcorch

from .conftest import fast_settings

pytestmark = [pytest.mark.reliability, pytest.mark.slow]


async def _jobs(dc: Dcorch) -> int:
    from sqlalchemy import func, select

    from dcorch.db.schema import orch_job

    def count(conn) -> int:
        return int(conn.execute(select(func.count()).select_from(orch_job)).scalar_one())

    return await dc.db.run_readonly(count)


async def _login(dc: Dcorch, name: str, password: str, project: str = "admin") -> str:
    body = {
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {
                    "user": {"name": name, "domain": {"id": "default"}, "password": password}
                },
            },
            "scope": {"project": {"name": project, "domain": {"id": "default"}}},
        }
    }
    response = await dc.client.post(f"{dc.master.keystone}/auth/tokens", json=body)
    assert response.status_code == 201, response.text
    return response.headers["X-Subject-Token"]


async def test_bad_tokens_are_refused_and_enqueue_nothing() -> None:
    settings = fast_settings(subclouds=1, proxy={"token_cache_ttl": 0.0})
    async with open_dcorch(settings, ephemeral_ports=True) as dc:
        assert dc.sim is not None
        users = dc.identity_url + "/v3/users"
        api = dc.api_url + "/v1.0/admin/subclouds"

        def body(name: str) -> dict[str, Any]:
            return {"user": {"name": name, "password": "pw-" + name, "domain_id": "default"}}

        # A non-admin user with a member role on the admin project, created via the proxy.
        member = await dc.client.post(users, json=body("member1"), headers=dc.auth)
        assert member.status_code == 201
        member_id = member.json()["user"]["id"]
        roles = (await dc.client.get(dc.identity_url + "/v3/roles", headers=dc.auth)).json()
        role_id = next((r["id"] for r in roles["roles"] if r["name"] == "member"), None)
        if role_id is None:
            made = await dc.client.post(
                dc.identity_url + "/v3/roles", json={"role": {"name": "member"}}, headers=dc.auth
            )
            assert made.status_code == 201, made.text
            role_id = made.json()["role"]["id"]
        projects = (await dc.client.get(dc.identity_url + "/v3/projects", headers=dc.auth)).json()
        project_id = next(p["id"] for p in projects["projects"] if p["name"] == "admin")
        granted = await dc.client.put(
            f"{dc.identity_url}/v3/projects/{project_id}/users/{member_id}/roles/{role_id}",
            headers=dc.auth,
        )
        assert granted.status_code in (200, 204), granted.text
        member_token = await _login(dc, "member1", "pw-member1")

        # A revoked admin token (revoked at the master, not through the proxy).
        revoked = await _login(dc, "admin", dc.settings.master.password)
        assert (
            await dc.client.post(users, json=body("pre"), headers={"X-Auth-Token": revoked})
        ).status_code == 201
        gone = await dc.client.delete(
            f"{dc.master.keystone}/auth/tokens",
            headers={"X-Auth-Token": dc.token, "X-Subject-Token": revoked},
        )
        assert gone.status_code == 204, gone.text

        # An expired admin token, minted by the master's own token codec with a past expiry.
        now = dc.sim.state.wall_clock()
        admin = dc.sim.master.identity.find_name("user", "default", "admin")
        project = dc.sim.master.identity.find_name("project", "default", "admin")
        assert admin is not None
        assert project is not None
        expired, _ = dc.sim.master.platform.codec.issue(
            admin["user"]["id"], ["password"], project["project"]["id"], now - 60, now - 3660
        )

        before = await _jobs(dc)
        cases = {
            "none": ({}, 401),
            "garbage": ({"X-Auth-Token": "gAAAAA-not-a-token"}, 401),
            "expired": ({"X-Auth-Token": expired}, 401),
            "revoked": ({"X-Auth-Token": revoked}, 401),
            "non-admin": ({"X-Auth-Token": member_token}, 403),
        }
        refused = 0
        for label, (headers, status) in cases.items():
            for method, url, kwargs in (
                ("POST", users, {"json": body(f"x-{label}")}),
                ("PATCH", f"{users}/{member_id}", {"json": {"user": {"description": "x"}}}),
                ("DELETE", f"{users}/{member_id}", {}),
            ):
                response = await dc.client.request(method, url, headers=headers, **kwargs)
                assert response.status_code == status, (label, method, response.text)
                if label == "non-admin":  # keystone's ForbiddenAction, relayed
                    action = {"POST": "create", "PATCH": "update", "DELETE": "delete"}[method]
                    message = response.json()["error"]["message"]
                    assert message.endswith(f"action: identity:{action}_user."), message
                refused += 1
            # The v1 API has no master behind it: its own admin check refuses a member.
            response = await dc.client.post(api, json={"subcloud": "intruder"}, headers=headers)
            assert response.status_code == status, (label, response.text)
            assert response.json()["error"] == ("forbidden" if status == 403 else "unauthorized")
            refused += 1
        assert await _jobs(dc) == before
        assert all(s.region_name != "intruder" for s in await dc.db.list_subclouds())
        assert member_id in dc.sim.master.identity.users
        print(f"\nsecurity: {refused} requests with bad tokens refused, 0 orch_jobs enqueued")
