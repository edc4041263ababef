"""The agent over a PostgreSQL keystone database (migrated by keystone-manage, asyncpg here).

The same guarantees as on SQLite, checked through the keystone served from that database:
create with ids (password works), replace with an id change (links follow), a late constraint
failure and a failure after every statement (nothing changed).
"""

from __future__ import annotations

import pytest

from dcorch.db.database import DatabaseSeams
from tests.dbsync.conftest import (
    Peer,
    PgKeystone,
    keystone_token,
    new_name,
    open_peer,
    wait_a_second,
)
from tests.dbsync.test_transactions import (
    everything,
    fail_after_writes,
    keystone_view,
    user_with_links,
)
from tests.realkeystone.keystone import KeystoneInstance

pytestmark = [pytest.mark.keystone, pytest.mark.postgres, pytest.mark.timeout(300)]


async def test_the_agent_keeps_a_postgresql_keystone_consistent(
    keystones: dict[str, KeystoneInstance], pg_keystone: PgKeystone
) -> None:
    armed = [False]
    seams = DatabaseSeams(wrap_execute=fail_after_writes(armed))
    async with (
        open_peer(keystones["master"]) as master,
        open_peer(pg_keystone.keystone, database_url=pg_keystone.database_url, seams=seams) as pg,
    ):
        assert pg.agent.store.schema.dialect == "postgresql"
        # create with the master's ids: the PostgreSQL keystone serves it, the password works
        password = "Pg-" + new_name("pw")
        source = await user_with_links(master, password)
        for plural, key in (("projects", "project"), ("roles", "role"), ("users", "user")):
            record = (await master.db("GET", f"{plural}/{source[key]}")).json()
            assert (await pg.db("POST", f"{plural}/", json=record)).status_code == 201
        group = (await master.db("GET", f"groups/{source['group']}")).json()
        assert (await pg.db("POST", "groups/", json=group)).status_code == 201
        name = (await pg.ks("GET", f"users/{source['user']}")).json()["user"]["name"]
        members = (await pg.ks("GET", f"groups/{source['group']}/users")).json()["users"]
        assert [m["id"] for m in members] == [source["user"]]
        login = await keystone_token(pg.http, pg.keystone.auth_url, name, password, None)
        assert login.status_code == 201, login.text

        # replace a PostgreSQL-side user (with links) by the master's id: keystone follows
        local = await user_with_links(pg, "Pg-local-pw")
        fresh = await user_with_links(master, "Pg-master-pw")
        await _replace(master, pg, local, fresh)
        seen = await keystone_view(pg, {**local, "user": fresh["user"]})
        assert seen["user"][0] == 200
        assert seen["members"] == [fresh["user"]]
        assert (await pg.ks("GET", f"users/{local['user']}")).status_code == 404

        # failures: a constraint late in the unit, then a fault after every statement
        before = await everything(pg)
        other = (await pg.db("GET", f"users/{source['user']}")).json()
        clash = {**other, "user": {**other["user"], "id": "0" * 32}}
        clash["local_user"] = {**clash["local_user"], "name": seen["user"][1]["user"]["name"]}
        assert (await pg.db("PUT", f"users/{source['user']}", json=clash)).status_code == 409
        armed[0] = True
        moved = {**other, "user": {**other["user"], "id": "1" * 32}}
        assert (await pg.db("PUT", f"users/{source['user']}", json=moved)).status_code == 500
        armed[0] = False
        assert await everything(pg) == before
        await wait_a_second()
        again = await keystone_token(pg.http, pg.keystone.auth_url, name, password, None)
        assert again.status_code == 201


async def _replace(master: Peer, pg: Peer, local: dict[str, str], fresh: dict[str, str]) -> None:
    """Give the PostgreSQL side's user the master user's id (only the user: its links stay)."""
    record = (await master.db("GET", f"users/{fresh['user']}")).json()
    response = await pg.db("PUT", f"users/{local['user']}", json=record)
    assert response.status_code == 200, response.text
    assert response.json()["user"]["id"] == fresh["user"]
