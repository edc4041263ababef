"""CA certificates end to end: upload through the platform proxy, sync, audit, on every subcloud.

``system certificate-install -m ssl_ca`` is a multipart upload to the platform proxy; the
master's sysinv (simulated, answering as sysinv's ``certificate_install`` does) installs it and
writes its CA files to ``master.ca_cert_dir`` (a temporary directory of the harness); the proxy
records one job per installed signature. sysinv's certificate listing carries no PEM, so the
audit installs the System Controller's own CA file (docs/behaviour.md#platform-driver). Each
test runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
from sqlalchemy import Connection, select

from dcorch import constants as c
from dcorch.db.schema import orch_job, orch_request, resource
from dcorch.harness import Dcorch, open_dcorch
from dcorch.sim import make_test_pem
from dcorch.sim.certs import parse_pem_certs
from tests.conftest import harness_settings
from tests.reliability.conftest import pg_database  # noqa: F401 - fixture

PLATFORM = c.ENDPOINT_TYPE_PLATFORM
VALID_FOR = 3
"""Seconds the short-lived CA is valid after its upload (its jobs take well under one)."""


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> str:
    """Empty: the harness's private SQLite file; else a private PostgreSQL database."""
    return "" if request.param == "sqlite" else str(request.getfixturevalue("pg_database"))


@pytest.fixture
async def dc(database_url: str) -> AsyncIterator[Dcorch]:
    settings = harness_settings(subclouds=3)
    if database_url:
        settings = settings.replace(database={"url": database_url})
    async with open_dcorch(settings, ephemeral_ports=True) as handle:
        await handle.wait_converged(timeout=30)
        for region in handle.sim.regions if handle.sim else ():
            # initial syncs done, so a fault set by a test cannot fail one (60 s hold-off)
            await eventually(partial(_initial_sync_done, handle, region), "initial sync")
        yield handle


async def _initial_sync_done(dc: Dcorch, region: str) -> bool:
    row = await dc.db.get_subcloud(region)
    return row.initial_sync_state == c.INITIAL_SYNC_COMPLETED


def signature(pem: str) -> str:
    return parse_pem_certs(pem)[0].signature("ssl_ca")


def signatures_on(dc: Dcorch, region: str) -> set[str]:
    assert dc.sim is not None
    return {cert["signature"] for cert in dc.sim.subcloud(region).platform.certificates.values()}


async def install_through_proxy(dc: Dcorch, pem: str) -> list[dict[str, Any]]:
    """``system certificate-install -m ssl_ca``: the master's installed records."""
    response = await dc.client.post(
        dc.platform_url + "/v1/certificate/certificate_install",
        files={"file": ("ca.pem", pem.encode(), "application/x-pem-file")},
        data={"mode": "ssl_ca"},
        headers=dc.auth,
    )
    assert response.status_code == 200, response.text
    assert response.json()["error"] == ""
    records: list[dict[str, Any]] = response.json()["certificates"]
    return records


def certificate_work(conn: Connection) -> list[tuple[str, str, str, str, int, bool]]:
    """(signature, operation, region, state, try_count, soft deleted) of every certificate
    request, oldest first."""
    rows = conn.execute(
        select(
            orch_job.c.source_resource_id,
            orch_job.c.operation_type,
            orch_request.c.target_region_name,
            orch_request.c.state,
            orch_request.c.try_count,
            orch_request.c.deleted,
        )
        .join(orch_job, orch_job.c.id == orch_request.c.orch_job_id)
        .join(resource, resource.c.id == orch_job.c.resource_id)
        .where(resource.c.resource_type == c.RESOURCE_CERTIFICATES)
        .order_by(orch_request.c.id)
    )
    return [(r[0], r[1], r[2], r[3], r[4], bool(r[5])) for r in rows]


def certificate_jobs(conn: Connection) -> list[tuple[str, str]]:
    rows = conn.execute(
        select(orch_job.c.source_resource_id, orch_job.c.operation_type)
        .join(resource, resource.c.id == orch_job.c.resource_id)
        .where(resource.c.resource_type == c.RESOURCE_CERTIFICATES)
        .order_by(orch_job.c.id)
    )
    return [(r[0], r[1]) for r in rows]


def audit_now(dc: Dcorch, region: str) -> None:
    """Make the platform audit of ``region`` due now (it is 20 minutes apart otherwise)."""
    assert dc.sync_manager is not None
    handle = dc.sync_manager.handle(region)
    assert handle is not None
    handle.audit_at[PLATFORM] = trio.current_time()
    dc.sync_manager.wake(region, PLATFORM)


async def eventually(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = trio.current_time() + 30.0
    while True:
        if await condition():
            return
        if trio.current_time() >= deadline:
            raise AssertionError(f"not within 30 s: {what}")
        await trio.sleep(0.05)


async def delete_on_subcloud(dc: Dcorch, region: str, sig: str) -> None:
    """Remove a certificate through the subcloud's own sysinv API, behind dcorch's back."""
    assert dc.sim is not None
    sysinv = dc.sim.endpoints.subcloud_sysinv(region)
    headers = {"X-Auth-Token": dc.sim.admin_token(region)}
    [uuid] = [
        u
        for u, cert in dc.sim.subcloud(region).platform.certificates.items()
        if cert["signature"] == sig
    ]
    response = await dc.client.delete(f"{sysinv}/certificate/{uuid}", headers=headers)
    assert response.status_code == 200, response.text


async def _has(dc: Dcorch, region: str, *sigs: str) -> bool:
    return set(sigs) <= signatures_on(dc, region)


async def _all_have(dc: Dcorch, regions: list[str], sig: str) -> bool:
    return all(sig in signatures_on(dc, r) for r in regions)


async def _completed(dc: Dcorch, sig: str, op: str, regions: list[str]) -> bool:
    """Every one of ``regions`` has a completed ``op`` request for ``sig`` (and no other)."""
    work = await dc.db.run(certificate_work)
    done = sorted(
        r for s, o, r, state, _, _ in work if s == sig and o == op and state == "completed"
    )
    return done == sorted(regions)


async def test_a_bundle_reaches_every_subcloud_and_the_audit_restores_a_deleted_one(
    dc: Dcorch,
) -> None:
    assert dc.sim is not None
    assert dc.sync_manager is not None
    regions = dc.sim.regions
    root_a, root_b = make_test_pem("e2e-root-a"), make_test_pem("e2e-root-b")
    sig_a, sig_b = signature(root_a), signature(root_b)

    records = await install_through_proxy(dc, root_a + root_b)
    assert [r["signature"] for r in records] == [sig_a, sig_b]
    # one job per certificate of the bundle, each for every subcloud
    assert await dc.db.run(certificate_jobs) == [(sig_a, "post"), (sig_b, "post")]

    async def completed() -> bool:
        work = await dc.db.run(certificate_work)
        return sorted((s, op, r, state) for s, op, r, state, _, _ in work) == sorted(
            (s, "post", r, "completed") for s in (sig_a, sig_b) for r in regions
        )

    await eventually(completed, "both jobs completed on every subcloud")
    for region in regions:
        assert signatures_on(dc, region) == {sig_a, sig_b}
        assert await dc.db.get_subcloud_resource(region, c.RESOURCE_CERTIFICATES, sig_a)
    # the System Controller keeps its copies, named by signature
    ca_dir = Path(dc.settings.master.ca_cert_dir)
    assert (ca_dir / sig_a).read_text() == root_a

    # drift: deleted directly on one subcloud, then restored by its next audit from that file
    drifted = regions[1]
    await delete_on_subcloud(dc, drifted, sig_a)
    assert signatures_on(dc, drifted) == {sig_b}
    audit_now(dc, drifted)

    async def repaired() -> bool:
        work = await dc.db.run(certificate_work)
        return [w[:4] for w in work if w[1] == "create"] == [
            (sig_a, "create", drifted, "completed")
        ]

    await eventually(repaired, "the audit's request for the deleted certificate completed")
    assert signatures_on(dc, drifted) == {sig_a, sig_b}
    installed = [
        op for op in dc.sim.subcloud(drifted).operations if op["op"] == "install_certificate"
    ]
    assert [op["signature"] for op in installed][-1] == sig_a
    for region in regions:
        assert signatures_on(dc, region) == {sig_a, sig_b}

    # a subcloud managed later gets both at its initial sync (its audit, from the files)
    [late] = await dc.add_subclouds(1)
    await eventually(lambda: _has(dc, late, sig_a, sig_b), "the new subcloud's initial sync")
    assert signatures_on(dc, late) == {sig_a, sig_b}
    await dc.wait_converged(timeout=30)


async def test_an_expired_ca_is_aborted_not_retried_and_a_missing_file_fails(
    dc: Dcorch, caplog: pytest.LogCaptureFixture
) -> None:
    assert dc.sim is not None
    assert dc.sync_manager is not None
    regions = dc.sim.regions
    online, drifted, offline = regions
    # A CA valid for a few more seconds, installed while one subcloud is unreachable.
    now = datetime.now(UTC).replace(microsecond=0)
    expiry = now + timedelta(seconds=VALID_FOR)
    short = make_test_pem(
        "e2e-short-lived",
        not_before=(now - timedelta(days=1)).isoformat(),
        not_after=expiry.isoformat(),
    )
    sig = signature(short)
    dc.sim.set_faults(offline, offline=True)
    await install_through_proxy(dc, short)
    await eventually(partial(_completed, dc, sig, "post", [online, drifted]), "while valid")
    assert await _all_have(dc, [online, drifted], sig)
    # expired meanwhile: the unreachable subcloud's request, and the audit's repair of a
    # subcloud that lost it, are both aborted (sysinv would refuse an expired CA anyway)
    await trio.sleep((expiry + timedelta(seconds=0.5) - datetime.now(UTC)).total_seconds())
    dc.sim.clear_faults(offline)
    await delete_on_subcloud(dc, drifted, sig)
    audit_now(dc, drifted)

    async def aborted() -> list[tuple[str, str, str, int]]:
        work = await dc.db.run(certificate_work)
        return sorted((r, op, st, n) for s, op, r, st, n, _ in work if s == sig and st == "aborted")

    async def both_aborted() -> bool:
        return [r for r, *_ in await aborted()] == sorted([drifted, offline])

    await eventually(both_aborted, "the expired certificate's requests aborted")
    assert await aborted() == sorted(
        [(drifted, "create", "aborted", 1), (offline, "post", "aborted", 1)]
    )
    # not retried: further sync passes leave them as they are, after their one attempt
    for region in regions:
        dc.sync_manager.wake(region, PLATFORM)
    await trio.sleep(0.5)
    assert await aborted() == sorted(
        [(drifted, "create", "aborted", 1), (offline, "post", "aborted", 1)]
    )
    assert signatures_on(dc, online) == {sig}
    for region in (drifted, offline):
        assert sig not in signatures_on(dc, region)
    assert not [op for op in dc.sim.subcloud(offline).operations if op.get("signature") == sig]

    # the System Controller's file is gone: the audit's request fails, naming what it looked for
    valid = make_test_pem("e2e-file-lost")
    lost = signature(valid)
    await install_through_proxy(dc, valid)
    await eventually(partial(_completed, dc, lost, "post", regions), "installed everywhere first")
    assert await _all_have(dc, regions, lost)
    ca_dir = Path(dc.settings.master.ca_cert_dir)
    (ca_dir / lost).unlink()
    await delete_on_subcloud(dc, regions[0], lost)
    caplog.set_level(logging.WARNING, logger="dcorch.sync.pair_sync")
    audit_now(dc, regions[0])

    async def failed() -> bool:
        work = await dc.db.run(certificate_work)
        return any(s == lost and op == "create" and st == "failed" for s, op, _, st, _, _ in work)

    await eventually(failed, "the request without a PEM failed")
    assert lost not in signatures_on(dc, regions[0])
    messages = [r.getMessage() for r in caplog.records if "sync.failed" in r.getMessage()]
    assert any(lost in m and str(ca_dir / lost) in m for m in messages), messages
