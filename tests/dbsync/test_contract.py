"""One dcdbsync contract, two servers: the simulator's routes and the agent over real keystone.

The same scenario (creates with ids, replaces that change ids, conflicts, bad input, tokens,
revocation events) runs against the simulated subcloud's dcdbsync and against the DB-sync agent
beside a real keystone 30; every answer must be the same. What is normalised, because it must
differ, and nothing else:

* per-cloud autoincrement ids (``local_user.id``, ``password.id`` and ``.local_user_id``,
  ``revocation_event.id``): each database numbers its own rows;
* the text of pecan-shaped error messages (``faultstring``): the agent quotes the database's
  constraint, the simulator its own words; status, shape and ``faultcode`` must match;
* listings are compared on the objects the scenario created: the two clouds start with
  different default objects (the simulator's vs keystone's bootstrap).

Where they disagreed, the simulator was changed (the agent over the real schema is right).
The expected status of every step is also asserted, so both being wrong the same way fails.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from dcorch.db import open_database
from dcorch.dbsync.agent import async_database_url
from dcorch.dbsync.contract import user_event_id
from dcorch.dbsync.schema import reflect_keystone
from dcorch.sim import open_sim_cloud
from dcorch.sim.keystone_tables import KEYSTONE_SPECS
from tests.dbsync.conftest import admin_token, keystone_token, open_peer
from tests.realkeystone.keystone import KeystoneInstance, new_keystone_db, sqlite_url

pytestmark = [pytest.mark.keystone, pytest.mark.timeout(300)]

AUTOINCREMENT = "<autoincrement>"


@dataclass
class Target:
    """A dcdbsync server under test, with its keystone (for tokens)."""

    name: str
    dbsync: str
    """``.../v1.0/identity``."""
    keystone: str
    """``.../v3`` of the keystone whose tokens it accepts."""
    admin_user: str
    admin_password: str
    http: httpx.AsyncClient
    token: str = ""
    answers: list[tuple[str, int, Any]] = field(default_factory=list)


@asynccontextmanager
async def sim_target(http: httpx.AsyncClient) -> AsyncIterator[Target]:
    async with open_sim_cloud(subclouds=1, port=0) as sim:
        yield Target(
            "simulator",
            sim.endpoints.subcloud_dcdbsync("subcloud1") + "/identity",
            sim.endpoints.subcloud_keystone("subcloud1"),
            sim.admin.username,
            sim.admin.password,
            http,
        )


@asynccontextmanager
async def agent_target(
    http: httpx.AsyncClient, keystone: KeystoneInstance
) -> AsyncIterator[Target]:
    async with open_peer(keystone) as peer:
        from tests.realkeystone.keystone import ADMIN_PASSWORD, ADMIN_USER

        yield Target("agent", peer.dbsync, keystone.auth_url, ADMIN_USER, ADMIN_PASSWORD, http)


def normalise(body: Any) -> Any:
    """Blank what must differ between two clouds (see the module docstring)."""
    if isinstance(body, list):
        return [normalise(item) for item in body]
    if not isinstance(body, dict):
        return body
    if "error_message" in body:
        fault = json.loads(body["error_message"])
        return {"error_message": {"faultcode": fault["faultcode"], "faultstring": "<text>"}}
    out = {k: normalise(v) for k, v in body.items()}
    if isinstance(out.get("local_user"), dict):
        out["local_user"] = {**out["local_user"], "id": AUTOINCREMENT}
        out["password"] = [
            {**p, "id": AUTOINCREMENT, "local_user_id": AUTOINCREMENT} for p in out["password"]
        ]
    if isinstance(out.get("revocation_event"), dict):
        out["revocation_event"] = {**out["revocation_event"], "id": AUTOINCREMENT}
    return out


class Scenario:
    """The steps, each a call whose (status, normalised body) is recorded per target."""

    def __init__(self) -> None:
        self.ids = {k: uuid.uuid4().hex for k in ("u1", "u2", "u3", "u4", "g1", "g2")}
        self.ids |= {k: uuid.uuid4().hex for k in ("p1", "p2", "r1", "r2", "missing")}
        self.names = {
            k: f"contract-{k}-{uuid.uuid4().hex[:8]}" for k in ("u1", "u3", "g", "p", "r")
        }
        self.audit = uuid.uuid4().hex[:22]
        self.event_user = uuid.uuid4().hex
        self.steps: list[tuple[str, int]] = []

    # -- records ---------------------------------------------------------------------------

    def user(
        self, key: str, name: str, *, hash_: str = "$2b$04$contract-hash-one"
    ) -> dict[str, Any]:
        return {
            "user": {
                "id": self.ids[key],
                "extra": json.dumps({"email": f"{name}@example.org"}),
                "enabled": True,
                "default_project_id": None,
                "created_at": "2026-01-02T03:04:05.000006",
                "last_active_at": None,
                "domain_id": "default",
            },
            "local_user": {
                "id": 99,  # another cloud's autoincrement id: ignored
                "user_id": "ignored",
                "domain_id": "default",
                "name": name,
                "failed_auth_count": 0,
                "failed_auth_at": None,
            },
            "password": [
                {
                    "id": 7,
                    "local_user_id": 8,
                    "password_hash": hash_,
                    "created_at": "2026-01-02T03:04:05.000006",
                    "expires_at": None,
                    "self_service": False,
                    "created_at_int": 1767323045000006,
                    "expires_at_int": None,
                }
            ],
            "user_option": [{"user_id": "ignored", "option_id": "1000", "option_value": "true"}],
        }

    def project(self, key: str) -> dict[str, Any]:
        return {
            "project": {
                "id": self.ids[key],
                "name": self.names["p"],
                "extra": "{}",
                "description": "contract project",
                "enabled": True,
                "domain_id": "default",
                "parent_id": "default",
                "is_domain": False,
            }
        }

    def role(self, key: str) -> dict[str, Any]:
        return {
            "role": {
                "id": self.ids[key],
                "name": self.names["r"],
                "extra": "{}",
                "domain_id": "<<null>>",
                "description": None,
            }
        }

    def event(self, **fields: Any) -> dict[str, Any]:
        return {
            "revocation_event": {
                "id": 4242,
                "issued_before": "2026-01-02T03:04:05.123456",
                "revoked_at": "2026-01-02T03:04:05.123456",
                **fields,
            }
        }

    # -- running ---------------------------------------------------------------------------

    async def call(
        self,
        t: Target,
        label: str,
        expect: int,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        token: str | None = None,
        only: set[str] | None = None,
    ) -> Any:
        headers = {"X-Auth-Token": t.token if token is None else token}
        if not headers["X-Auth-Token"]:
            headers = {}
        kwargs: dict[str, Any] = {"content": raw} if raw is not None else {"json": body}
        response = await t.http.request(method, f"{t.dbsync}/{path}", headers=headers, **kwargs)
        payload = response.json() if response.content else None
        if only is not None and isinstance(payload, list):
            payload = [item for item in payload if _ids(item) & only]
        t.answers.append((label, response.status_code, normalise(payload)))
        assert response.status_code == expect, (t.name, label, response.text)
        return payload

    async def run(self, t: Target) -> None:
        t.token = await admin_token(t.http, t.keystone, t.admin_password)
        ids, names = self.ids, self.names
        u1 = self.user("u1", names["u1"])
        await self.call(t, "create user", 201, "POST", "users/", u1)
        await self.call(t, "get user", 200, "GET", f"users/{ids['u1']}")
        await self.call(t, "create same id", 409, "POST", "users/", u1)
        await self.call(t, "create same name", 409, "POST", "users/", self.user("u2", names["u1"]))
        created = set(ids.values())
        await self.call(t, "list users", 200, "GET", "users/", only=created)
        group = {"group": _group(ids["g1"], names["g"]), "local_user_ids": [ids["u1"]]}
        await self.call(t, "create group", 201, "POST", "groups/", group)

        moved = self.user("u2", names["u1"], hash_="$2b$04$contract-hash-two")
        moved["user_option"] = []
        await self.call(t, "replace user, new id", 200, "PUT", f"users/{ids['u1']}", moved)
        await self.call(t, "old id gone", 404, "GET", f"users/{ids['u1']}")
        await self.call(t, "membership follows", 200, "GET", f"groups/{ids['g1']}")
        partial = {"user": {"enabled": False}, "local_user": {"failed_auth_count": 3}}
        await self.call(t, "replace, partial", 200, "PUT", f"users/{ids['u2']}", partial)
        regroup = {"group": {**_group(ids["g2"], names["g"]), "description": "moved"}}
        await self.call(t, "replace group", 200, "PUT", f"groups/{ids['g1']}", regroup)
        empty = {"group": {"id": ids["g2"]}, "local_user_ids": []}
        await self.call(t, "empty group", 200, "PUT", f"groups/{ids['g2']}", empty)

        await self.call(t, "create project", 201, "POST", "projects/", self.project("p1"))
        await self.call(
            t, "replace project", 200, "PUT", f"projects/{ids['p1']}", self.project("p2")
        )
        await self.call(t, "old project gone", 404, "GET", f"projects/{ids['p1']}")
        await self.call(t, "create role", 201, "POST", "roles/", self.role("r1"))
        await self.call(t, "replace role", 200, "PUT", f"roles/{ids['r1']}", self.role("r2"))
        await self.call(t, "list roles", 200, "GET", "roles/", only=created)

        # a replace that fails late (new id, then a name taken) leaves the old object intact
        await self.call(t, "create u3", 201, "POST", "users/", self.user("u3", names["u3"]))
        clash = self.user("u4", names["u3"])
        await self.call(t, "replace to a taken name", 409, "PUT", f"users/{ids['u2']}", clash)
        await self.call(t, "taken id", 409, "PUT", f"users/{ids['u2']}", self.user("u3", "x"))
        await self.call(t, "u2 intact", 200, "GET", f"users/{ids['u2']}")
        await self.call(t, "u4 absent", 404, "GET", f"users/{ids['u4']}")

        await self.bad_input(t)
        await self.call(t, "nothing written", 200, "GET", "users/", only=created)
        await self.call(t, "groups unchanged", 200, "GET", "groups/", only=created)
        await self.call(t, "projects unchanged", 200, "GET", "projects/", only=created)
        await self.tokens(t, created)
        await self.events(t)

    async def bad_input(self, t: Target) -> None:
        ids, names = self.ids, self.names
        fresh = self.user("u4", "contract-fresh")
        bad: list[tuple[str, Any]] = [
            ("no body", None),
            ("empty object", {}),
            ("no local_user", {"user": fresh["user"]}),
            ("unknown section", {**fresh, "colour": {}}),
            ("unknown column", {**fresh, "user": {**fresh["user"], "colour": "red"}}),
            ("not a boolean", {**fresh, "user": {**fresh["user"], "enabled": "yes"}}),
            ("id not a string", {**fresh, "user": {**fresh["user"], "id": 5}}),
            ("no id", {**fresh, "user": {k: v for k, v in fresh["user"].items() if k != "id"}}),
            ("name too long", {**fresh, "local_user": {**fresh["local_user"], "name": "n" * 300}}),
            ("bad datetime", {**fresh, "user": {**fresh["user"], "created_at": "yesterday"}}),
            (
                "password without created_at",
                {**fresh, "password": [{"password_hash": "h", "self_service": False}]},
            ),
            ("password not a list", {**fresh, "password": {"password_hash": "h"}}),
            ("domains differ", {**fresh, "local_user": {**fresh["local_user"], "domain_id": "x"}}),
            (
                "unknown domain",
                {
                    **fresh,
                    "user": {**fresh["user"], "domain_id": "nowhere"},
                    "local_user": {**fresh["local_user"], "domain_id": "nowhere"},
                },
            ),
        ]
        for label, body in bad:
            await self.call(t, f"bad user: {label}", 400, "POST", "users/", body)
        await self.call(t, "bad JSON", 400, "POST", "users/", raw=b"{not json")
        members = {"group": _group(ids["g1"], "contract-g-bad"), "local_user_ids": ["nobody"]}
        await self.call(t, "unknown member", 400, "POST", "groups/", members)
        twice = {"group": _group(ids["g1"], "contract-g-bad"), "local_user_ids": ["a", "a"]}
        await self.call(t, "member twice", 400, "POST", "groups/", twice)
        orphan = self.project("p1")
        orphan["project"] |= {"parent_id": "nowhere", "name": "contract-orphan"}
        await self.call(t, "unknown parent", 400, "POST", "projects/", orphan)
        await self.call(
            t, "role, unknown section", 400, "POST", "roles/", {**self.role("r1"), "x": 1}
        )
        broken = {"user": {"enabled": "no"}, "local_user": {}}
        await self.call(t, "replace, bad type", 400, "PUT", f"users/{ids['u2']}", broken)
        await self.call(
            t, "replace, missing", 404, "PUT", f"users/{ids['missing']}", self.user("u4", "m")
        )
        await self.call(t, "get missing role", 404, "GET", f"roles/{ids['missing']}")
        await self.call(t, "unknown collection", 404, "GET", "widgets/")
        del names

    async def tokens(self, t: Target, created: set[str]) -> None:
        await self.call(t, "no token", 401, "GET", "users/", token="")
        await self.call(t, "bad token", 401, "GET", "users/", token="not-a-token")
        name, password = f"contract-member-{uuid.uuid4().hex[:8]}", "Member-pw-1"
        admin = {"X-Auth-Token": t.token}
        made = await t.http.post(
            f"{t.keystone}/users",
            headers=admin,
            json={"user": {"name": name, "password": password, "domain_id": "default"}},
        )
        member = made.json()["user"]["id"]
        role = await t.http.get(f"{t.keystone}/roles", params={"name": "member"}, headers=admin)
        project = await t.http.get(
            f"{t.keystone}/projects", params={"name": "admin"}, headers=admin
        )
        grant = (
            f"{t.keystone}/projects/{project.json()['projects'][0]['id']}/users/{member}"
            f"/roles/{role.json()['roles'][0]['id']}"
        )
        assert (await t.http.put(grant, headers=admin)).status_code == 204
        login = await keystone_token(t.http, t.keystone, name, password)
        token = login.headers["X-Subject-Token"]
        await self.call(t, "member reads", 403, "GET", "users/", token=token)
        await self.call(
            t, "member writes", 403, "POST", "users/", self.user("u4", "m"), token=token
        )
        await self.call(t, "still nothing written", 200, "GET", "users/", only=created)

    async def events(self, t: Target) -> None:
        audit, user = self.audit, self.event_user
        await self.call(
            t, "create event", 201, "POST", "token-revocation-events/", self.event(audit_id=audit)
        )
        path = f"token-revocation-events/audits/{audit}"
        await self.call(t, "get event", 200, "GET", path)
        await self.call(
            t, "event twice", 409, "POST", "token-revocation-events/", self.event(audit_id=audit)
        )
        await self.call(
            t, "list events", 200, "GET", "token-revocation-events/", only={audit, user}
        )
        await self.call(t, "delete event", 204, "DELETE", path)
        await self.call(t, "event gone", 404, "GET", path)
        await self.call(t, "delete again", 404, "DELETE", path)
        body = self.event(user_id=user)
        await self.call(t, "create user event", 201, "POST", "token-revocation-events/", body)
        key = user_event_id(user, "2026-01-02T03:04:05.123456")
        await self.call(t, "get user event", 200, "GET", f"token-revocation-events/users/{key}")
        other = user_event_id(user, "2026-01-02T03:04:05.000000")
        await self.call(t, "other instant", 404, "GET", f"token-revocation-events/users/{other}")
        await self.call(t, "bad event id", 404, "GET", "token-revocation-events/users/%%%")
        await self.call(
            t, "delete user event", 204, "DELETE", f"token-revocation-events/users/{key}"
        )
        await self.call(
            t, "empty event", 400, "POST", "token-revocation-events/", {"revocation_event": {}}
        )
        no_owner = self.event()
        await self.call(t, "event without owner", 400, "POST", "token-revocation-events/", no_owner)
        unrevoked = self.event(audit_id=audit)
        del unrevoked["revocation_event"]["revoked_at"]
        await self.call(
            t, "event without revoked_at", 400, "POST", "token-revocation-events/", unrevoked
        )
        await self.call(
            t, "events unchanged", 200, "GET", "token-revocation-events/", only={audit, user}
        )


def _group(gid: str, name: str) -> dict[str, Any]:
    return {"id": gid, "domain_id": "default", "name": name, "description": "g", "extra": "{}"}


def _ids(item: Any) -> set[str]:
    """Ids an answer item carries (to keep only the scenario's objects in a listing)."""
    if not isinstance(item, dict):
        return set()
    found = set()
    for section in item.values():
        if isinstance(section, dict):
            found |= {str(section.get(k)) for k in ("id", "audit_id", "user_id") if section.get(k)}
    return found


async def test_simulator_and_agent_answer_the_same(
    keystones: dict[str, KeystoneInstance],
) -> None:
    scenario = Scenario()
    async with httpx.AsyncClient(timeout=60) as http:
        async with sim_target(http) as sim:
            await scenario.run(sim)
        async with agent_target(http, keystones["subcloud"]) as agent:
            await scenario.run(agent)
    assert len(sim.answers) == len(agent.answers) > 60
    for mine, real in zip(sim.answers, agent.answers, strict=True):
        assert mine == real, f"step {mine[0]!r}: simulator {mine[1:]} != agent {real[1:]}"


async def test_the_simulator_validates_against_keystone_30s_real_tables(tmp_path: Path) -> None:
    """The simulator's static copy of keystone's tables equals a migrated keystone's schema."""
    url = async_database_url(sqlite_url(new_keystone_db(tmp_path)))
    async with open_database(url, check_schema=False) as db:
        schema = await db.run_readonly(reflect_keystone)
    assert dict(schema.specs) == dict(KEYSTONE_SPECS)
