"""The platform (sysinv) driver against the simulated subcloud over HTTP, with SQLite.

What the driver does: docs/behaviour.md#platform-driver.

Each test queues one request through the real enqueue and applies it with the real driver, then
looks at the subcloud's state, its applied-operations log and dcorch's mapping rows.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from dcorch import constants as c
from dcorch.db.rows import PendingRequest
from dcorch.remote.errors import PermanentSyncError, SyncAborted
from dcorch.sim import make_test_pem
from dcorch.sim.certs import parse_pem_certs
from dcorch.sync.drivers import apply_request

from .conftest import DriverRig

UNSYNCED_MODES = ("ssl", "docker_registry", "openstack", "openldap")


def multipart(fields: dict[str, str | bytes]) -> dict[str, str]:
    """resource_info as the proxy stores a certificate install (raw upload text + its type)."""
    files = {"file": ("ca.pem", fields.pop("file"), "application/x-pem-file")}
    request = httpx.Request(
        "POST", "http://sysinv/v1/certificate/certificate_install", files=files, data=fields
    )
    body = request.read()
    return {
        "payload": body.decode("utf-8", "surrogateescape"),
        "content_type": request.headers["content-type"],
    }


def signature(pem: str, mode: str) -> str:
    return parse_pem_certs(pem)[0].signature(mode)


def iso(delta: timedelta) -> str:
    return (datetime.now(UTC) + delta).isoformat()


def installed(rig: DriverRig) -> set[str]:
    return {cert["signature"] for cert in rig.cloud.platform.certificates.values()}


# certificates ------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["ssl_ca", "openstack_ca"])
async def test_certificate_post_from_proxy_multipart_installs_ca_once(
    rig: DriverRig, mode: str
) -> None:
    pem = make_test_pem(f"root-{mode}")
    sig = signature(pem, mode)
    info = multipart({"file": pem, "mode": mode})
    await rig.apply(c.RESOURCE_CERTIFICATES, sig, c.OPERATION_POST, info)
    await rig.apply(c.RESOURCE_CERTIFICATES, sig, c.OPERATION_POST, info)
    assert installed(rig) == {sig}
    assert rig.ops("sysinv") == ["install_certificate"]
    assert await rig.mapped(c.RESOURCE_CERTIFICATES, sig) == sig


@pytest.mark.parametrize("mode", UNSYNCED_MODES)
async def test_certificate_post_of_other_modes_is_a_successful_no_op(
    rig: DriverRig, mode: str
) -> None:
    pem = make_test_pem("server")
    sig = signature(pem, mode)
    await rig.apply(
        c.RESOURCE_CERTIFICATES, sig, c.OPERATION_POST, multipart({"file": pem, "mode": mode})
    )
    assert installed(rig) == set()
    assert rig.ops() == []
    assert await rig.mapped(c.RESOURCE_CERTIFICATES, sig) is None


async def test_certificate_multipart_with_non_utf8_bytes_is_parsed(rig: DriverRig) -> None:
    # The proxy keeps undecodable upload bytes as lone surrogates (payload_text); the driver
    # must turn them back into bytes instead of crashing its actor on a UnicodeEncodeError.
    pem = make_test_pem("latin")
    sig = signature(pem, "ssl_ca")
    info = multipart({"file": pem, "mode": "ssl_ca", "note": "caf\u00e9"})
    info["payload"] = info["payload"].replace("caf\u00e9", "caf\udce9")
    await rig.apply(c.RESOURCE_CERTIFICATES, sig, c.OPERATION_POST, info)
    assert installed(rig) == {sig}


async def test_certificate_whose_file_and_passphrase_are_not_utf8_installs(rig: DriverRig) -> None:
    # Found by ./just fuzz: undecodable bytes in the file part itself (and the passphrase) came
    # back from the proxy's text as lone surrogates and crashed the actor at the upload.
    pem = make_test_pem("raw-bytes")
    sig = signature(pem, "ssl_ca")
    upload: dict[str, str | bytes] = {"file": b"\xff\xfe\n" + pem.encode(), "mode": "ssl_ca"}
    upload["passphrase"] = b"p\xff"
    await rig.apply(c.RESOURCE_CERTIFICATES, sig, c.OPERATION_POST, multipart(upload))
    assert installed(rig) == {sig}
    assert rig.ops("sysinv") == ["install_certificate"]


def listed(rig: DriverRig, pem: str, mode: str = "ssl_ca", **fields: str) -> dict[str, Any]:
    """The master's record of ``pem`` as sysinv lists it: no PEM in it."""
    cert = parse_pem_certs(pem)[0]
    record = {
        "uuid": "0b7c0bd4-7a39-4c1e-9a4c-3a1f0f0d0e01",
        "certtype": mode,
        "signature": cert.signature(mode),
        "start_date": cert.start_date,
        "expiry_date": cert.expiry_date,
        "subject": cert.subject,
    }
    return {**record, **fields}


async def apply_with_ca_dir(
    rig: DriverRig, ca_dir: Path | str, sig: str, op: str, info: Any
) -> PendingRequest:
    """Queue and apply one request with ``master.ca_cert_dir`` set to ``ca_dir``."""
    request = await rig.request(c.RESOURCE_CERTIFICATES, sig, op, info)
    ctx = dataclasses.replace(await rig.context(), master_ca_dir=str(ca_dir))
    await apply_request(ctx, request)
    return request


KEY_BLOCK = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqG\n-----END PRIVATE KEY-----\n"


@pytest.mark.parametrize("mode", ["ssl_ca", "openstack_ca"])
@pytest.mark.parametrize("layout", ["by-signature", "by-signature.pem", "scanned-bundle"])
async def test_audit_create_installs_the_masters_copy_of_the_ca_file(
    rig: DriverRig, tmp_path: Path, mode: str, layout: str
) -> None:
    """sysinv's listing has no PEM: the System Controller's CA file is installed, and only
    the certificate asked for, whichever file of the directory holds it."""
    ca_dir = tmp_path / "ca"
    ca_dir.mkdir()
    pem = make_test_pem(f"audit-{mode}")
    sig = signature(pem, mode)
    neighbour = make_test_pem("neighbour")
    if layout == "scanned-bundle":
        (ca_dir / "ca-cert.pem").write_text(neighbour + KEY_BLOCK + pem)
        (ca_dir / "notes.txt").write_bytes(b"\xff\xfe not a certificate")
        (ca_dir / "subdir").mkdir()
    else:
        (ca_dir / layout.replace("by-signature", sig)).write_text(pem)
        (ca_dir / signature(neighbour, mode)).write_text(neighbour)
    payload = listed(rig, pem, mode)
    await apply_with_ca_dir(rig, ca_dir, sig, c.OPERATION_CREATE, {"payload": payload})
    [stored] = rig.cloud.platform.certificates.values()
    assert stored["subject"] == f"CN=audit-{mode}"
    assert installed(rig) == {sig}
    assert rig.ops("sysinv") == ["install_certificate"]
    assert await rig.mapped(c.RESOURCE_CERTIFICATES, sig) == sig


async def test_audit_create_without_the_pem_fails_naming_signature_and_path(
    rig: DriverRig, tmp_path: Path
) -> None:
    """PEM not found: the request fails (PermanentSyncError -> ``failed``), its message names
    the signature and the directory looked at, and nothing is installed or mapped."""
    pem = make_test_pem("lost")
    sig = signature(pem, "ssl_ca")
    ca_dir = tmp_path / "ca"
    ca_dir.mkdir()
    (ca_dir / "other.pem").write_text(make_test_pem("someone-else"))
    payload = listed(rig, pem)
    with pytest.raises(PermanentSyncError) as caught:
        await apply_with_ca_dir(rig, ca_dir, sig, c.OPERATION_CREATE, {"payload": payload})
    assert str(caught.value) == (
        f"no PEM for CA certificate {sig} in {ca_dir}: neither {ca_dir / sig}[.pem|.crt] "
        f"nor any other file there (1 scanned) holds it"
    )
    with pytest.raises(PermanentSyncError, match=f"{sig}: {tmp_path / 'missing'} is not a dir"):
        await apply_with_ca_dir(
            rig, tmp_path / "missing", sig, c.OPERATION_CREATE, {"payload": payload}
        )
    with pytest.raises(PermanentSyncError, match=f"{sig}.*master.ca_cert_dir is not set"):
        await rig.apply(c.RESOURCE_CERTIFICATES, sig, c.OPERATION_CREATE, {"payload": payload})
    assert installed(rig) == set()
    assert rig.ops() == []
    assert await rig.mapped(c.RESOURCE_CERTIFICATES, sig) is None


async def test_audit_create_of_a_ca_already_present_needs_no_file(rig: DriverRig) -> None:
    pem = make_test_pem("present")
    sig = signature(pem, "ssl_ca")
    await rig.apply(
        c.RESOURCE_CERTIFICATES, sig, c.OPERATION_POST, multipart({"file": pem, "mode": "ssl_ca"})
    )
    payload = listed(rig, pem)
    await rig.apply(c.RESOURCE_CERTIFICATES, sig, c.OPERATION_CREATE, {"payload": payload})
    assert rig.ops("sysinv") == ["install_certificate"]  # the first one only
    assert await rig.mapped(c.RESOURCE_CERTIFICATES, sig) == sig


async def test_certificate_audit_dict_of_an_unsynced_type_is_a_no_op(rig: DriverRig) -> None:
    payload = listed(rig, make_test_pem("srv", ca=False), "ssl")
    await rig.apply(
        c.RESOURCE_CERTIFICATES, payload["signature"], c.OPERATION_CREATE, {"payload": payload}
    )
    assert installed(rig) == set()
    assert rig.ops() == []


async def test_expired_certificate_aborts_and_installs_nothing(
    rig: DriverRig, tmp_path: Path
) -> None:
    pem = make_test_pem("old", not_after="2020-01-01T00:00:00+00:00")
    sig = signature(pem, "ssl_ca")
    (tmp_path / sig).write_text(pem)
    payload = listed(rig, pem)
    with pytest.raises(SyncAborted, match=f"{sig} expired"):
        await apply_with_ca_dir(rig, tmp_path, sig, c.OPERATION_CREATE, {"payload": payload})
    # from the proxy too: the bundle's block for this signature has expired since
    info = multipart({"file": make_test_pem("fine") + pem, "mode": "ssl_ca"})
    with pytest.raises(SyncAborted, match=f"{sig} expired"):
        await rig.apply(c.RESOURCE_CERTIFICATES, sig, c.OPERATION_POST, info)
    assert installed(rig) == set()
    assert await rig.mapped(c.RESOURCE_CERTIFICATES, sig) is None


async def test_one_job_of_a_proxied_bundle_installs_its_own_certificate(rig: DriverRig) -> None:
    first, second = make_test_pem("bundle-1"), make_test_pem("bundle-2")
    info = multipart({"file": first + second, "mode": "ssl_ca"})
    sig = signature(second, "ssl_ca")
    await rig.apply(c.RESOURCE_CERTIFICATES, sig, c.OPERATION_POST, info)
    assert installed(rig) == {sig}


async def test_empty_payload_and_no_certificate_are_no_ops(rig: DriverRig) -> None:
    await rig.apply(c.RESOURCE_CERTIFICATES, "ssl_ca_1", c.OPERATION_CREATE, {})
    payload = listed(rig, make_test_pem("x"), signature="NoCertificate")
    await rig.apply(
        c.RESOURCE_CERTIFICATES, "NoCertificate", c.OPERATION_CREATE, {"payload": payload}
    )
    assert installed(rig) == set()
    assert rig.ops() == []


async def test_a_subcloud_refusing_the_certificate_fails_the_request(rig: DriverRig) -> None:
    leaf = make_test_pem("not-a-ca", ca=False)  # sysinv refuses a non-CA as ssl_ca
    sig = signature(leaf, "ssl_ca")
    info = multipart({"file": leaf, "mode": "ssl_ca"})
    with pytest.raises(PermanentSyncError, match="non-CA"):
        await rig.apply(c.RESOURCE_CERTIFICATES, sig, c.OPERATION_POST, info)
    assert await rig.mapped(c.RESOURCE_CERTIFICATES, sig) is None


async def test_certificate_upload_without_file_part_fails_permanently(rig: DriverRig) -> None:
    info = multipart({"file": "", "mode": "ssl_ca"})
    info["payload"] = info["payload"].replace('name="file"', 'name="other"')
    with pytest.raises(PermanentSyncError, match="no file part"):
        await rig.apply(c.RESOURCE_CERTIFICATES, "ssl_ca_x", c.OPERATION_POST, info)


async def test_certificate_delete_uses_the_mapping_and_removes_it(rig: DriverRig) -> None:
    pem = make_test_pem("to-delete")
    sig = signature(pem, "ssl_ca")
    await rig.apply(
        c.RESOURCE_CERTIFICATES, sig, c.OPERATION_POST, multipart({"file": pem, "mode": "ssl_ca"})
    )
    other = make_test_pem("keep")
    await rig.apply(
        c.RESOURCE_CERTIFICATES,
        signature(other, "ssl_ca"),
        c.OPERATION_POST,
        multipart({"file": other, "mode": "ssl_ca"}),
    )
    await rig.apply(c.RESOURCE_CERTIFICATES, sig, c.OPERATION_DELETE)
    assert installed(rig) == {signature(other, "ssl_ca")}
    assert await rig.mapped(c.RESOURCE_CERTIFICATES, sig) is None


async def test_certificate_delete_when_already_gone_or_unmapped_is_fine(rig: DriverRig) -> None:
    pem = make_test_pem("gone")
    sig = signature(pem, "ssl_ca")
    await rig.apply(
        c.RESOURCE_CERTIFICATES, sig, c.OPERATION_POST, multipart({"file": pem, "mode": "ssl_ca"})
    )
    rig.cloud.platform.certificates.clear()  # removed on the subcloud behind dcorch's back
    await rig.apply(c.RESOURCE_CERTIFICATES, sig, c.OPERATION_DELETE)
    assert await rig.mapped(c.RESOURCE_CERTIFICATES, sig) is None
    await rig.apply(c.RESOURCE_CERTIFICATES, sig, c.OPERATION_DELETE)  # no mapping: no-op
    assert "delete_certificate" not in rig.ops()


# iuser -------------------------------------------------------------------------------------------


def iuser_patch(**values: object) -> list[dict[str, object]]:
    return [{"op": "replace", "path": f"/{k}", "value": v} for k, v in values.items()]


async def test_iuser_patch_applies_only_when_values_differ(rig: DriverRig) -> None:
    master_uuid = rig.sim.master.platform.iuser["uuid"]
    change = iuser_patch(
        passwd_hash="$6$new", passwd_expiry_days=45, passwd_last_change="2026-01-02"
    )
    await rig.apply(c.RESOURCE_IUSER, master_uuid, c.OPERATION_PATCH, {"payload": change})
    iuser = rig.cloud.platform.iuser
    assert (iuser["passwd_hash"], iuser["passwd_expiry_days"]) == ("$6$new", 45)
    assert iuser["passwd_last_change"] == "2026-01-02"
    assert await rig.mapped(c.RESOURCE_IUSER, master_uuid) == iuser["uuid"]
    await rig.apply(c.RESOURCE_IUSER, master_uuid, c.OPERATION_PATCH, {"payload": change})
    same = {"passwd_hash": "$6$new", "passwd_expiry_days": 45}
    await rig.apply(c.RESOURCE_IUSER, master_uuid, c.OPERATION_PUT, same)
    assert rig.ops("sysinv") == ["patch_iuser"]


async def test_iuser_put_with_a_plain_dict_patches_the_differing_fields(rig: DriverRig) -> None:
    before = dict(rig.cloud.platform.iuser)
    payload = {"passwd_hash": "$6$put", "passwd_expiry_days": before["passwd_expiry_days"]}
    await rig.apply(c.RESOURCE_IUSER, "m-uuid", c.OPERATION_PUT, {"payload": payload})
    [op] = [o for o in rig.cloud.operations if o["op"] == "patch_iuser"]
    assert op["fields"] == ["passwd_hash"]
    assert rig.cloud.platform.iuser["passwd_hash"] == "$6$put"


async def test_iuser_without_passwd_hash_is_a_no_op(rig: DriverRig) -> None:
    before = dict(rig.cloud.platform.iuser)
    await rig.apply(
        c.RESOURCE_IUSER,
        "m-uuid",
        c.OPERATION_PATCH,
        {"payload": iuser_patch(passwd_expiry_days=1)},
    )
    assert rig.cloud.platform.iuser == before
    assert rig.ops() == []
    assert await rig.mapped(c.RESOURCE_IUSER, "m-uuid") is None


async def test_iuser_passwd_last_change_only_sent_when_the_subcloud_has_it(rig: DriverRig) -> None:
    iuser = dict(rig.cloud.platform.iuser)
    del iuser["passwd_last_change"]  # an older sysinv without the field (5f09fe07)
    rig.cloud.platform.iuser = iuser
    change = iuser_patch(passwd_hash="$6$old-release", passwd_last_change="2026-02-03")
    await rig.apply(c.RESOURCE_IUSER, "m-uuid", c.OPERATION_PATCH, {"payload": change})
    [op] = [o for o in rig.cloud.operations if o["op"] == "patch_iuser"]
    assert op["fields"] == ["passwd_hash"]


# fernet keys -------------------------------------------------------------------------------------


def master_keys(rig: DriverRig) -> dict[str, str]:
    return {str(k): v for k, v in rig.sim.master.platform.fernet_keys.items()}


async def test_fernet_repo_create_posts_the_full_key_list(rig: DriverRig) -> None:
    assert rig.cloud.platform.fernet_keys != rig.sim.master.platform.fernet_keys
    await rig.apply(c.RESOURCE_FERNET_REPO, "keys", c.OPERATION_CREATE, master_keys(rig))
    assert rig.cloud.platform.fernet_keys == rig.sim.master.platform.fernet_keys
    assert rig.ops("sysinv") == ["post_fernet_repo"]
    assert await rig.mapped(c.RESOURCE_FERNET_REPO, "keys") == "keys"


async def test_fernet_repo_put_replaces_the_keys_idempotently(rig: DriverRig) -> None:
    keys = master_keys(rig)
    for _ in range(2):
        await rig.apply(c.RESOURCE_FERNET_REPO, "keys", c.OPERATION_PUT, keys)
    assert rig.cloud.platform.fernet_keys == rig.sim.master.platform.fernet_keys
    assert rig.ops("sysinv") == ["put_fernet_repo", "put_fernet_repo"]
    listed = [{"id": int(k), "key": v} for k, v in keys.items()]
    await rig.apply(c.RESOURCE_FERNET_REPO, "keys", c.OPERATION_PATCH, {"keys": listed})
    assert rig.cloud.platform.fernet_keys == rig.sim.master.platform.fernet_keys


@pytest.mark.parametrize("info", [{}, {"x": "not-a-key"}, json.dumps("text")])
async def test_fernet_repo_bad_payload_fails_permanently(rig: DriverRig, info: object) -> None:
    before = dict(rig.cloud.platform.fernet_keys)
    with pytest.raises(PermanentSyncError):
        await rig.apply(c.RESOURCE_FERNET_REPO, "keys", c.OPERATION_PUT, info)
    assert rig.cloud.platform.fernet_keys == before


async def test_unknown_platform_operation_fails_permanently(rig: DriverRig) -> None:
    with pytest.raises(PermanentSyncError, match="no platform handler"):
        await rig.apply(c.RESOURCE_FERNET_REPO, "keys", c.OPERATION_DELETE)
