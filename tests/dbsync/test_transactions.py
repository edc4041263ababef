"""One call, one transaction: a call that fails anywhere leaves the keystone database as it was.

Checked through the agent's listings (every kind, every row, not only the touched object) and
through the real keystone's own API (the object, its memberships and assignments, its login).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import Connection

from dcorch.db.database import DatabaseSeams
from dcorch.db.runner import Execute, Unit
from tests.dbsync.conftest import Peer, keystone_token, new_name, open_peer
from tests.realkeystone.keystone import KeystoneInstance

pytestmark = [pytest.mark.keystone, pytest.mark.timeout(300)]


class InjectedFault(Exception):
    """Raised by the seam after a unit's statements ran, before its commit."""


def fail_after_writes(armed: list[bool]) -> Callable[[Execute], Execute]:
    """A seam: while ``armed[0]``, every write unit runs all its statements, then raises."""

    def wrap(execute: Execute) -> Execute:
        async def wrapped(fn: Unit, args: tuple[Any, ...], write: bool) -> Any:
            if not (write and armed[0]):
                return await execute(fn, args, write)

            def then_fail(conn: Connection, *unit_args: Any) -> Any:
                fn(conn, *unit_args)
                raise InjectedFault("after every statement of the unit")

            return await execute(then_fail, args, write)

        return wrapped

    return wrap


async def everything(peer: Peer) -> dict[str, Any]:
    """Every record the agent serves, and every revocation event."""
    found = {}
    for path in ("users/", "groups/", "projects/", "roles/", "token-revocation-events/"):
        response = await peer.db("GET", path)
        assert response.status_code == 200
        found[path] = response.json()
    return found


async def user_with_links(peer: Peer, password: str) -> dict[str, str]:
    """A user in a group, with a role on a project directly and through the group."""

    async def make(kind: str, body: dict[str, Any]) -> str:
        response = await peer.ks("POST", f"{kind}s", json={kind: body})
        assert response.status_code == 201, response.text
        return str(response.json()[kind]["id"])

    ids = {
        "project": await make("project", {"name": new_name("tp"), "domain_id": "default"}),
        "role": await make("role", {"name": new_name("tr")}),
        "group": await make("group", {"name": new_name("tg"), "domain_id": "default"}),
    }
    ids["user"] = await make(
        "user", {"name": new_name("tu"), "password": password, "default_project_id": ids["project"]}
    )
    for path in (
        f"groups/{ids['group']}/users/{ids['user']}",
        f"projects/{ids['project']}/users/{ids['user']}/roles/{ids['role']}",
        f"projects/{ids['project']}/groups/{ids['group']}/roles/{ids['role']}",
    ):
        assert (await peer.ks("PUT", path)).status_code == 204
    return ids


async def keystone_view(peer: Peer, ids: dict[str, str]) -> dict[str, Any]:
    """What keystone itself says about the user and everything linked to it."""
    user = await peer.ks("GET", f"users/{ids['user']}")
    members = await peer.ks("GET", f"groups/{ids['group']}/users")
    assignments = await peer.ks(
        "GET", "role_assignments", params={"scope.project.id": ids["project"]}
    )
    return {
        "user": (user.status_code, user.json()),
        "members": sorted(u["id"] for u in members.json()["users"]),
        "assignments": sorted(
            (a.get("user") or a.get("group"))["id"] + ":" + a["role"]["id"]
            for a in assignments.json()["role_assignments"]
        ),
    }


async def test_a_replace_failing_after_all_its_statements_changes_nothing(
    keystones: dict[str, KeystoneInstance],
) -> None:
    armed = [False]
    seams = DatabaseSeams(wrap_execute=fail_after_writes(armed))
    async with open_peer(keystones["subcloud"], seams=seams) as peer:
        password = "Tx-" + new_name("pw")
        ids = await user_with_links(peer, password)
        record = (await peer.db("GET", f"users/{ids['user']}")).json()
        before, seen = await everything(peer), await keystone_view(peer, ids)
        assert seen["members"] == [ids["user"]]
        assert len(seen["assignments"]) == 2

        moved = {
            **record,
            "user": {**record["user"], "id": new_name("moved").replace("-", "")},
            "local_user": {**record["local_user"], "name": new_name("renamed")},
            "password": [{**record["password"][0], "password_hash": "$2b$04$other"}],
        }
        armed[0] = True
        for method, path, body in (
            ("PUT", f"users/{ids['user']}", moved),  # rekey, update, passwords, options
            ("POST", "users/", {**moved, "local_user": {**moved["local_user"], "name": "n2"}}),
            ("PUT", f"groups/{ids['group']}", {"group": {"id": "g2"}, "local_user_ids": []}),
            ("PUT", f"projects/{ids['project']}", {"project": {"id": "p2"}}),
            ("PUT", f"roles/{ids['role']}", {"role": {"id": "r2"}}),
        ):
            answer = await peer.db(method, path, json=body)
            assert answer.status_code == 500, answer.text
            assert "nothing was changed" in answer.text
        armed[0] = False

        assert await everything(peer) == before
        assert await keystone_view(peer, ids) == seen
        login = await keystone_token(
            peer.http, peer.keystone.auth_url, seen["user"][1]["user"]["name"], password, None
        )
        assert login.status_code == 201


async def test_a_replace_refused_by_a_constraint_late_leaves_the_old_object(
    keystones: dict[str, KeystoneInstance],
) -> None:
    """New id (copy, references moved, old row deleted), then a taken name: all rolled back."""
    async with open_peer(keystones["subcloud"]) as peer:
        ids = await user_with_links(peer, "Tx-pw-1")
        other = await user_with_links(peer, "Tx-pw-2")
        taken = (await peer.ks("GET", f"users/{other['user']}")).json()["user"]["name"]
        record = (await peer.db("GET", f"users/{ids['user']}")).json()
        before, seen = await everything(peer), await keystone_view(peer, ids)
        clash = {
            **record,
            "user": {**record["user"], "id": new_name("late").replace("-", "")},
            "local_user": {**record["local_user"], "name": taken},
        }
        answer = await peer.db("PUT", f"users/{ids['user']}", json=clash)
        assert answer.status_code == 409, answer.text
        group_clash = {"group": {"id": other["group"]}}
        assert (await peer.db("PUT", f"groups/{ids['group']}", json=group_clash)).status_code == 409
        assert await everything(peer) == before
        assert await keystone_view(peer, ids) == seen


async def test_bad_input_writes_nothing_anywhere(keystones: dict[str, KeystoneInstance]) -> None:
    async with open_peer(keystones["subcloud"]) as peer:
        ids = await user_with_links(peer, "Tx-pw-3")
        record = (await peer.db("GET", f"users/{ids['user']}")).json()
        before = await everything(peer)
        bad = [
            ("POST", "users/", {**record, "user": {**record["user"], "id": "x" * 65}}),
            ("POST", "users/", {**record, "password": [{"password_hash": 1}]}),
            ("PUT", f"users/{ids['user']}", {**record, "user_option": [{"option_id": "toolong"}]}),
            ("PUT", f"groups/{ids['group']}", {"group": {}, "local_user_ids": ["ghost"]}),
            ("PUT", f"projects/{ids['project']}", {"project": {"domain_id": "ghost-domain"}}),
            ("PUT", f"roles/{ids['role']}", {"role": {"name": None}}),
            ("POST", "token-revocation-events/", {"revocation_event": {"audit_id": "a" * 33}}),
        ]
        for method, path, body in bad:
            answer = await peer.db(method, path, json=body)
            assert answer.status_code == 400, (path, answer.text)
            assert answer.json()["error_message"]
        oversized = b'{"user": "' + b"x" * (1024 * 1024) + b'"}'
        assert (await peer.db("POST", "users/", content=oversized)).status_code == 413
        assert await everything(peer) == before
