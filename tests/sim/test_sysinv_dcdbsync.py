"""The simulated sysinv, dcdbsync and dcmanager over real HTTP."""

from __future__ import annotations

from pathlib import Path
from typing import TypedDict

import httpx
from cryptography import x509

from dcorch.settings import MasterSettings
from dcorch.sim import SimCloud, make_test_pem, open_sim_cloud
from dcorch.sim.ca_files import OPENSTACK_CA_FILE
from dcorch.sim.tokens import new_fernet_key
from tests.sim.conftest import auth


class _Multipart(TypedDict):
    files: dict[str, tuple[str, bytes, str]]
    data: dict[str, str]


def _multipart(pem: str, mode: str) -> _Multipart:
    return {
        "files": {"file": ("ca.pem", pem.encode(), "application/x-pem-file")},
        "data": {"mode": mode, "passphrase": ""},
    }


async def test_certificate_install_list_delete(sim: SimCloud, client: httpx.AsyncClient) -> None:
    si = sim.endpoints.master_sysinv
    h = auth(sim)
    one = make_test_pem("root-a")
    r = await client.post(
        f"{si}/certificate/certificate_install", headers=h, **_multipart(one, "ssl_ca")
    )
    assert r.status_code == 200
    # sysinv's certificate_install shape: a list of the installed records
    [installed] = r.json()["certificates"]
    signature = installed["signature"]
    serial = x509.load_pem_x509_certificate(one.encode()).serial_number
    assert signature == f"ssl_ca_{serial}"
    assert installed["certtype"] == "ssl_ca"
    assert r.json()["error"] == ""

    bundle = make_test_pem("root-b") + make_test_pem("root-c")
    r = await client.post(
        f"{si}/certificate/certificate_install", headers=h, **_multipart(bundle, "ssl_ca")
    )
    signatures = [c["signature"] for c in r.json()["certificates"]]
    assert len(set(signatures)) == 2
    # the same PEM gives the same signature on any cloud
    r = await client.post(
        f"{sim.endpoints.subcloud_sysinv('subcloud1')}/certificate/certificate_install",
        headers=auth(sim, "subcloud1"),
        **_multipart(one, "ssl_ca"),
    )
    assert [c["signature"] for c in r.json()["certificates"]] == [signature]

    certs = (await client.get(f"{si}/certificate", headers=h)).json()["certificates"]
    assert sorted(c["signature"] for c in certs) == sorted([signature, *signatures])
    second = next(c for c in certs if c["signature"] == signatures[1])
    assert second["expiry_date"] == "2034-01-01T00:00:00+00:00"
    assert second["start_date"] == "2024-01-01T00:00:00+00:00"
    assert second["subject"] == "CN=root-c"
    r = await client.get(f"{si}/certificate/{second['uuid']}", headers=h)
    assert r.json()["signature"] == signatures[1]
    r = await client.delete(f"{si}/certificate/{second['uuid']}", headers=h)
    assert r.status_code == 200
    assert r.json()["signature"] == signatures[1]
    r = await client.delete(f"{si}/certificate/{second['uuid']}", headers=h)
    assert r.status_code == 404
    assert "faultstring" in r.json()["error_message"]

    # refusals are sysinv's: 200, the reason in "error", nothing installed
    before = dict(sim.master.platform.certificates)
    for pem, mode, reason in [
        (one, "bogus", "Invalid mode: bogus"),
        ("no pem here", "ssl_ca", "no valid certificates found"),
        (make_test_pem("leaf", ca=False), "ssl_ca", "non-CA type certificate"),
        (make_test_pem("old", not_after="2020-01-01T00:00:00+00:00"), "ssl_ca", "not valid"),
    ]:
        r = await client.post(
            f"{si}/certificate/certificate_install", headers=h, **_multipart(pem, mode)
        )
        assert r.status_code == 200
        assert reason in r.json()["error"]
        assert not r.json().get("certificates")
    assert sim.master.platform.certificates == before
    r = await client.post(f"{si}/certificate/certificate_install", headers=h, json={})
    assert r.status_code == 400
    r = await client.get(f"{si}/certificate")
    assert r.status_code == 401


async def test_a_bundle_installs_its_valid_certificates_and_names_the_expired_one(
    sim: SimCloud, client: httpx.AsyncClient
) -> None:
    bundle = make_test_pem("fresh") + make_test_pem("stale", not_after="2020-01-01T00:00:00Z")
    r = await client.post(
        f"{sim.endpoints.master_sysinv}/certificate/certificate_install",
        headers=auth(sim),
        **_multipart(bundle, "ssl_ca"),
    )
    assert r.status_code == 200
    assert [c["subject"] for c in r.json()["certificates"]] == ["CN=fresh"]
    assert r.json()["error"].startswith("Error with cert number 2 in the file: ")


async def test_the_master_keeps_its_ca_files_on_disk(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    """As a System Controller: ssl_ca by signature, openstack_ca in one replaced file."""
    settings = MasterSettings(ca_cert_dir=str(tmp_path / "ca"))
    async with open_sim_cloud(master=settings, subclouds=1, port=0) as sim:
        si, h = sim.endpoints.master_sysinv, auth(sim)
        url = f"{si}/certificate/certificate_install"
        pem_a, pem_b = make_test_pem("file-a"), make_test_pem("file-b")
        r = await client.post(url, headers=h, **_multipart(pem_a + pem_b, "ssl_ca"))
        sig_a, sig_b = (c["signature"] for c in r.json()["certificates"])
        assert (tmp_path / "ca" / sig_a).read_text() == pem_a
        assert (tmp_path / "ca" / sig_b).read_text() == pem_b
        for name in ("os-1", "os-2"):
            await client.post(url, headers=h, **_multipart(make_test_pem(name), "openstack_ca"))
        assert (tmp_path / "ca" / OPENSTACK_CA_FILE).read_text() == make_test_pem("os-2")
        [record_a] = [
            c for c in sim.master.platform.certificates.values() if c["signature"] == sig_a
        ]
        assert (await client.delete(f"{si}/certificate/{record_a['uuid']}", headers=h)).is_success
        assert sorted(p.name for p in (tmp_path / "ca").iterdir()) == [OPENSTACK_CA_FILE, sig_b]
        # a subcloud's installs touch no file
        sub = sim.endpoints.subcloud_sysinv("subcloud1")
        await client.post(
            f"{sub}/certificate/certificate_install",
            headers=auth(sim, "subcloud1"),
            **_multipart(make_test_pem("sub-only"), "ssl_ca"),
        )
        assert sorted(p.name for p in (tmp_path / "ca").iterdir()) == [OPENSTACK_CA_FILE, sig_b]


async def test_certificate_upload_is_read_as_the_platform_driver_reads_it(
    sim: SimCloud, client: httpx.AsyncClient
) -> None:
    """Found by ./just fuzz: a boundary matched mid-line (junk before it) or cut at a ``;``
    gave the master parts that dcorch's driver, replaying the upload, did not see, so the
    master kept a CA no subcloud ever got. Both now read RFC 2046 delimiters only."""
    si, h = sim.endpoints.master_sysinv, auth(sim)
    pem = make_test_pem("junk-before")
    part = 'Content-Disposition: form-data; name="{}"\r\n\r\n{}\r\n'
    uploads = {
        "B": "junk--B\r\n" + part.format("mode", "ssl_ca") + "--B\r\n" + part.format("file", pem),
        "x": "--x;y\r\n" + part.format("mode", "ssl_ca") + "--x;y\r\n" + part.format("file", pem),
    }
    for boundary, body in uploads.items():
        r = await client.post(
            f"{si}/certificate/certificate_install",
            content=(body + f"--{boundary}--\r\n").encode(),
            headers={**h, "Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
        assert r.status_code in (200, 400), r.text
        if r.status_code == 200:  # the mode part was data: installed as ssl, if at all
            assert {c["certtype"] for c in r.json()["certificates"]} <= {"ssl"}
    assert all(c["certtype"] != "ssl_ca" for c in sim.master.platform.certificates.values())


async def test_iuser_patch(sim: SimCloud, client: httpx.AsyncClient) -> None:
    si = sim.endpoints.subcloud_sysinv("subcloud3")
    h = auth(sim, "subcloud3")
    iusers = (await client.get(f"{si}/iuser", headers=h)).json()["iusers"]
    assert len(iusers) == 1
    uuid = iusers[0]["uuid"]
    patch = [
        {"op": "replace", "path": "/passwd_hash", "value": "$6$new"},
        {"op": "replace", "path": "/passwd_expiry_days", "value": 30},
    ]
    r = await client.patch(f"{si}/iuser/{uuid}", headers=h, json=patch)
    assert r.status_code == 200
    assert r.json()["passwd_hash"] == "$6$new"
    assert sim.subcloud("subcloud3").platform.iuser["passwd_expiry_days"] == 30
    assert (await client.get(f"{si}/iuser/{uuid}", headers=h)).json()["passwd_hash"] == "$6$new"
    r = await client.patch(
        f"{si}/iuser/{uuid}", headers=h, json=[{"op": "replace", "path": "/shell", "value": 1}]
    )
    assert r.status_code == 400
    assert (await client.patch(f"{si}/iuser/nope", headers=h, json=patch)).status_code == 404
    assert (await client.patch(f"{si}/iuser/{uuid}", headers=h, json={})).status_code == 400


async def test_fernet_repo_replaces_signing_keys(sim: SimCloud, client: httpx.AsyncClient) -> None:
    si = sim.endpoints.subcloud_sysinv("subcloud1")
    old_token = sim.admin_token("subcloud1")
    h = {"X-Auth-Token": old_token}
    keys = [{"id": 0, "key": new_fernet_key()}, {"id": 1, "key": new_fernet_key()}]
    r = await client.put(f"{si}/fernet_repo", headers=h, json=keys)
    assert r.status_code == 200
    assert r.json() == keys
    # the old token was signed with keys the subcloud no longer has
    assert (await client.get(f"{si}/fernet_repo", headers=h)).status_code == 401
    h = auth(sim, "subcloud1")
    assert (await client.get(f"{si}/fernet_repo", headers=h)).json() == keys
    r = await client.post(f"{si}/fernet_repo", headers=h, json=keys[:1])
    assert r.status_code == 201
    assert sim.subcloud("subcloud1").platform.fernet_keys == {0: keys[0]["key"]}
    h = auth(sim, "subcloud1")  # the signing key (highest id) changed again
    bad = await client.put(f"{si}/fernet_repo", headers=h, json=[{"id": 0, "key": "short"}])
    assert bad.status_code == 400
    assert (await client.get(sim.endpoints.subcloud_sysinv("subcloud1"))).status_code == 200


async def test_dcdbsync_replicates_master_records(sim: SimCloud, client: httpx.AsyncClient) -> None:
    ks, mdb = sim.endpoints.master_keystone, sim.endpoints.master_dcdbsync
    sdb = sim.endpoints.subcloud_dcdbsync("subcloud1")
    h, sh = auth(sim), auth(sim, "subcloud1")
    uid = (
        await client.post(
            f"{ks}/users", headers=h, json={"user": {"name": "carol", "password": "pw"}}
        )
    ).json()["user"]["id"]
    gid = (await client.post(f"{ks}/groups", headers=h, json={"group": {"name": "g1"}})).json()[
        "group"
    ]["id"]
    await client.put(f"{ks}/groups/{gid}/users/{uid}", headers=h)

    users = (await client.get(f"{mdb}/identity/users/", headers=h)).json()
    assert {u["user"]["id"] for u in users} >= {uid}
    record = (await client.get(f"{mdb}/identity/users/{uid}", headers=h)).json()
    assert set(record) == {"user", "local_user", "password", "user_option"}
    r = await client.post(f"{sdb}/identity/users/", headers=sh, json=record)
    assert r.status_code == 201
    assert r.json()["user"]["id"] == uid
    assert r.json()["password"][0]["password_hash"] == record["password"][0]["password_hash"]
    assert (await client.post(f"{sdb}/identity/users/", headers=sh, json=record)).status_code == 409
    # the replicated password hash works for authentication on the subcloud
    body = {
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {"user": {"id": uid, "password": "pw"}},
            }
        }
    }
    r = await client.post(f"{sim.endpoints.subcloud_keystone('subcloud1')}/auth/tokens", json=body)
    assert r.status_code == 201

    group = (await client.get(f"{mdb}/identity/groups/{gid}", headers=h)).json()
    assert group["local_user_ids"] == [uid]
    r = await client.post(f"{sdb}/identity/groups/", headers=sh, json=group)
    assert r.status_code == 201
    assert r.json()["local_user_ids"] == [uid]

    # PUT over a subcloud object with another id: it takes the master's id and details
    sc = sim.subcloud("subcloud1")
    local = (
        await client.post(
            f"{sim.endpoints.subcloud_keystone('subcloud1')}/projects",
            headers=sh,
            json={"project": {"name": "shared"}},
        )
    ).json()
    pid = (
        await client.post(
            f"{ks}/projects", headers=h, json={"project": {"name": "shared", "description": "m"}}
        )
    ).json()["project"]["id"]
    master_project = (await client.get(f"{mdb}/identity/projects/{pid}", headers=h)).json()
    r = await client.put(
        f"{sdb}/identity/projects/{local['project']['id']}", headers=sh, json=master_project
    )
    assert r.status_code == 200
    assert r.json()["project"]["id"] == pid
    assert local["project"]["id"] not in sc.identity.projects
    assert sc.identity.projects[pid]["project"]["description"] == "m"
    assert (
        await client.put(f"{sdb}/identity/projects/missing", headers=sh, json=master_project)
    ).status_code == 404

    roles = (await client.get(f"{mdb}/identity/roles/", headers=h)).json()
    assert {r["role"]["name"] for r in roles} >= {"admin", "member", "reader"}
    new_role = {"role": {**roles[0]["role"], "id": "r-new", "name": "extra-role"}}
    assert (
        await client.post(f"{sdb}/identity/roles/", headers=sh, json=new_role)
    ).status_code == 201
    assert (await client.get(f"{sdb}/identity/roles/r-new", headers=sh)).status_code == 200
    assert (await client.post(f"{sdb}/identity/roles/", headers=sh, json={})).status_code == 400
    assert (await client.get(f"{sdb}/identity/users/", headers=h)).status_code == 401


async def test_dcdbsync_revocation_events(sim: SimCloud, client: httpx.AsyncClient) -> None:
    ks, mdb = sim.endpoints.master_keystone, sim.endpoints.master_dcdbsync
    sdb = sim.endpoints.subcloud_dcdbsync("subcloud2")
    h, sh = auth(sim), auth(sim, "subcloud2")
    victim = await sim.login(client)
    audit = (
        await client.get(f"{ks}/auth/tokens", headers={**h, "X-Subject-Token": victim})
    ).json()["token"]["audit_ids"][0]
    await client.delete(f"{ks}/auth/tokens", headers={**h, "X-Subject-Token": victim})
    events = (await client.get(f"{mdb}/identity/token-revocation-events/", headers=h)).json()
    assert [e["revocation_event"]["audit_id"] for e in events] == [audit]
    event = (
        await client.get(f"{mdb}/identity/token-revocation-events/audits/{audit}", headers=h)
    ).json()
    r = await client.post(f"{sdb}/identity/token-revocation-events/", headers=sh, json=event)
    assert r.status_code == 201
    url = f"{sdb}/identity/token-revocation-events/audits/{audit}"
    assert (await client.get(url, headers=sh)).json()["revocation_event"]["audit_id"] == audit
    assert (await client.delete(url, headers=sh)).status_code == 204
    assert (await client.get(url, headers=sh)).status_code == 404

    # per-user events (a password change) are addressed by b64("<user_id>_<issued_before>")
    uid = (
        await client.post(
            f"{ks}/users", headers=h, json={"user": {"name": "dave", "password": "a"}}
        )
    ).json()["user"]["id"]
    await client.patch(f"{ks}/users/{uid}", headers=h, json={"user": {"password": "b"}})
    user_event = next(e for e in sim.master.identity.revocations.values() if e["user_id"] == uid)
    from dcorch.sim.records import user_event_id

    event_id = user_event_id(uid, user_event["issued_before"])
    r = await client.get(f"{mdb}/identity/token-revocation-events/users/{event_id}", headers=h)
    assert r.status_code == 200
    assert r.json()["revocation_event"]["user_id"] == uid
    r = await client.post(f"{sdb}/identity/token-revocation-events/", headers=sh, json=r.json())
    assert r.status_code == 201
    r = await client.delete(f"{sdb}/identity/token-revocation-events/users/{event_id}", headers=sh)
    assert r.status_code == 204
    assert (
        await client.post(
            f"{sdb}/identity/token-revocation-events/", headers=sh, json={"revocation_event": {}}
        )
    ).status_code == 400


async def test_status_reports(sim: SimCloud, client: httpx.AsyncClient) -> None:
    h = auth(sim)
    for status in ("out-of-sync", "in-sync", "in-sync"):
        r = await client.post(
            sim.endpoints.status_report("subcloud1"),
            headers=h,
            json={"endpoint_type": "identity", "sync_status": status, "alarmable": True},
        )
        assert r.status_code == 200
    await client.post(
        sim.endpoints.status_report("subcloud2"),
        headers=h,
        json={"endpoint_type": "platform", "sync_status": "in-sync"},
    )
    reports = sim.status_reports("subcloud1", "identity")
    assert [r["sync_status"] for r in reports] == ["out-of-sync", "in-sync", "in-sync"]
    assert [r["seq"] for r in sim.status_reports()] == [1, 2, 3, 4]
    assert sim.latest_status("subcloud2", "platform") == "in-sync"
    r = await client.get(
        f"{sim.endpoints.control}/master/status-reports", params={"region": "subcloud2"}
    )
    assert r.json()["count"] == 4
    assert len(r.json()["reports"]) == 1
    bad = {"endpoint_type": "identity", "sync_status": "sideways"}
    assert (
        await client.post(sim.endpoints.status_report("subcloud1"), headers=h, json=bad)
    ).status_code == 400
    assert (
        await client.post(sim.endpoints.status_report("nope"), headers=h, json=bad)
    ).status_code == 404
    assert (
        await client.post(sim.endpoints.status_report("subcloud1"), json=bad)
    ).status_code == 401
