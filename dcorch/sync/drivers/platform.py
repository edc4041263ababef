"""Platform (sysinv) driver: certificates, the sysadmin iuser and the fernet key repository.

Only ``ssl_ca`` and ``openstack_ca`` certificates are synced (docs/behaviour.md#platform-driver);
other modes succeed as no-ops, never blocking the queue. An install's raw multipart text, stored
by the proxy, is parsed here, so the proxy's hot path stays a byte copy.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import Message
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any, Final

from dcorch import constants as c
from dcorch.db.rows import PendingRequest
from dcorch.remote.clients import loads_info
from dcorch.remote.errors import PermanentSyncError, RemoteNotFound, SyncAborted
from dcorch.sync.drivers import ca_files
from dcorch.sync.drivers.context import DriverContext

logger = logging.getLogger(__name__)

SYNCED_CERT_MODES: Final = frozenset({"ssl_ca", "openstack_ca"})
NO_CERTIFICATE: Final = "NoCertificate"
IUSER_FIELDS: Final = ("passwd_hash", "root_sig", "passwd_expiry_days", "passwd_last_change")


async def apply(ctx: DriverContext, request: PendingRequest) -> None:
    """Dispatch on resource type and operation."""
    rtype, op = request.resource_type, request.operation_type
    if rtype == c.RESOURCE_CERTIFICATES and op in (c.OPERATION_POST, c.OPERATION_CREATE):
        await install_certificate(ctx, request)
    elif rtype == c.RESOURCE_CERTIFICATES and op == c.OPERATION_DELETE:
        await delete_certificate(ctx, request)
    elif rtype == c.RESOURCE_IUSER and op in (c.OPERATION_PATCH, c.OPERATION_PUT):
        await update_iuser(ctx, request)
    elif rtype == c.RESOURCE_FERNET_REPO and op in (
        c.OPERATION_CREATE,
        c.OPERATION_POST,
        c.OPERATION_PUT,
        c.OPERATION_PATCH,
    ):
        await push_fernet_keys(ctx, request, create=op in (c.OPERATION_CREATE, c.OPERATION_POST))
    else:
        raise PermanentSyncError(f"no platform handler for {op} {rtype}")


# certificates ------------------------------------------------------------------------------------


def parse_multipart(payload: str, content_type: str) -> dict[str, str]:
    """The text fields of a multipart/form-data body (``file``, ``mode``, ``passphrase``)."""
    if "multipart" not in content_type:
        raise PermanentSyncError(f"certificate payload is not multipart: {content_type!r}")
    head = f"Content-Type: {content_type}\r\n\r\n".encode()
    # The proxy stored the raw body with undecodable bytes as lone surrogates (payload_text).
    body = payload.encode("utf-8", "surrogateescape")
    message = BytesParser(policy=HTTP).parsebytes(head + body)
    fields: dict[str, str] = {}
    for part in message.walk():
        if part.is_multipart():
            continue
        name = _form_name(part)
        if name:
            raw = part.get_payload(decode=True)
            fields[name] = (
                raw.decode("utf-8", "surrogateescape")
                if isinstance(raw, bytes)
                else str(part.get_payload())
            )
    return fields


def _form_name(part: Message) -> str | None:
    name = part.get_param("name", header="content-disposition")
    return name if isinstance(name, str) else None


@dataclass(frozen=True, slots=True)
class _Wanted:
    """The certificate a request installs: its mode, and its PEM unless the master's file
    must be looked up (an audit's request carries sysinv's listing record, never a PEM)."""

    mode: str
    pem: str | None = None
    passphrase: str | None = None


def _certificate_to_install(info: Any, signature: str) -> _Wanted | None:
    """What to install, or None when this certificate is not synced.

    Raises:
        SyncAborted: the certificate has expired (it can never be installed).
        PermanentSyncError: the payload is unusable.
    """
    payload = info.get("payload") if isinstance(info, dict) else None
    if not payload:
        return None
    if isinstance(payload, str):
        fields = parse_multipart(payload, str(info.get("content_type", "")))
        mode = fields.get("mode", "")
        if mode not in SYNCED_CERT_MODES:
            return None
        pem = fields.get("file", "")
        if not pem:
            raise PermanentSyncError("certificate upload has no file part")
        # One job per signature of a bundle: install that certificate, not the whole upload.
        found = ca_files.find_cert(pem, signature, mode)
        if found is None:
            return _Wanted(mode, pem, fields.get("passphrase") or None)
        block, expiry = found
        _check_not_expired(signature, expiry)
        return _Wanted(mode, block, fields.get("passphrase") or None)
    if isinstance(payload, dict):
        mode = str(payload.get("certtype", payload.get("mode", "")))
        if mode not in SYNCED_CERT_MODES:
            return None
        _check_not_expired(signature, _parse_time(payload.get("expiry_date")))
        return _Wanted(mode)
    raise PermanentSyncError("certificate payload has an unknown shape")


def _check_not_expired(signature: str, expiry: datetime | None) -> None:
    if expiry is not None and expiry < datetime.now(UTC):
        raise SyncAborted(f"certificate {signature} expired at {expiry}")


async def install_certificate(ctx: DriverContext, request: PendingRequest) -> None:
    """Install the master's CA certificate on the subcloud under the same signature.

    Without a PEM in the request, the System Controller's own copy is read from
    ``master.ca_cert_dir`` (:mod:`dcorch.sync.drivers.ca_files`); not found fails the request
    with a message naming the signature and the path looked at.
    """
    signature = request.master_id or request.source_resource_id
    if signature == NO_CERTIFICATE:
        return
    wanted = _certificate_to_install(loads_info(request.resource_info), signature)
    if wanted is None:
        return
    present = {cert.get("signature") for cert in await ctx.remote.list_certificates()}
    if signature not in present:
        pem = wanted.pem or await ca_files.find_master_ca(ctx.master_ca_dir, signature, wanted.mode)
        reply = await ctx.remote.install_certificate(pem, wanted.mode, wanted.passphrase)
        installed = _installed_signatures(reply)
        if installed is not None and signature not in installed:
            error = reply.get("error") if isinstance(reply, dict) else None
            raise PermanentSyncError(
                f"subcloud did not install certificate {signature}: {error or 'not in its reply'}"
            )
    await ctx.map(c.RESOURCE_CERTIFICATES, signature, signature)


def _installed_signatures(reply: Any) -> set[str] | None:
    """The signatures a ``certificate_install`` reply lists (sysinv: a list of the installed
    records), or None when it has no such list (nothing to check against)."""
    certificates = reply.get("certificates") if isinstance(reply, dict) else None
    if not isinstance(certificates, list):
        return None
    return {str(cert.get("signature")) for cert in certificates if isinstance(cert, dict)}


async def delete_certificate(ctx: DriverContext, request: PendingRequest) -> None:
    """Uninstall the subcloud certificate mapped to the master's signature (gone: fine)."""
    mapping = await ctx.db.get_subcloud_resource(
        ctx.region, c.RESOURCE_CERTIFICATES, request.master_id
    )
    if mapping is None:
        return
    for cert in await ctx.remote.list_certificates():
        if cert.get("signature") == mapping.subcloud_resource_id and cert.get("uuid"):
            with contextlib.suppress(RemoteNotFound):  # removed meanwhile: goal reached
                await ctx.remote.delete_certificate(str(cert["uuid"]))
    await ctx.unmap(c.RESOURCE_CERTIFICATES, request.master_id)


# iuser -------------------------------------------------------------------------------------------


def iuser_values(payload: Any) -> dict[str, Any]:
    """The synced iuser fields from a JSON-patch list or a plain dict."""
    values: dict[str, Any] = {}
    if isinstance(payload, list):
        for op in payload:
            if isinstance(op, dict) and isinstance(op.get("path"), str):
                key = op["path"].lstrip("/")
                if key in IUSER_FIELDS:
                    values[key] = op.get("value")
    elif isinstance(payload, dict):
        values = {k: payload[k] for k in IUSER_FIELDS if k in payload}
    return values


async def update_iuser(ctx: DriverContext, request: PendingRequest) -> None:
    """Make the subcloud's sysadmin account match; patch only fields that differ."""
    info = loads_info(request.resource_info)
    payload = info.get("payload", info) if isinstance(info, dict) else info
    values = iuser_values(payload)
    if not values.get("passwd_hash"):
        return
    iusers = await ctx.remote.list_iusers()
    if not iusers:
        raise PermanentSyncError("subcloud has no iuser")
    current = iusers[0]
    patch = [
        {"op": "replace", "path": f"/{key}", "value": value}
        for key, value in values.items()
        if (key != "passwd_last_change" or key in current) and current.get(key) != value
    ]
    if patch:
        await ctx.remote.patch_iuser(str(current["uuid"]), patch)
    await ctx.map(c.RESOURCE_IUSER, request.master_id, str(current["uuid"]))


# fernet keys -------------------------------------------------------------------------------------


def key_list(info: Any) -> list[dict[str, Any]]:
    """``{"<id>": "<key>"}`` (or a ``[{id, key}]`` list) as sysinv's sorted key list."""
    if isinstance(info, dict) and "keys" in info:
        info = info["keys"]
    if isinstance(info, dict):
        try:
            return [
                {"id": int(k), "key": v} for k, v in sorted(info.items(), key=lambda i: int(i[0]))
            ]
        except ValueError as exc:
            raise PermanentSyncError(f"bad fernet key id: {exc}") from exc
    if isinstance(info, list):
        return sorted(({"id": int(k["id"]), "key": k["key"]} for k in info), key=lambda k: k["id"])
    raise PermanentSyncError("fernet key payload has an unknown shape")


async def push_fernet_keys(ctx: DriverContext, request: PendingRequest, *, create: bool) -> None:
    """Send the full key list: POST on create, PUT otherwise (both replace the repository)."""
    keys = key_list(loads_info(request.resource_info))
    if not keys:
        raise PermanentSyncError("empty fernet key list")
    if create:
        await ctx.remote.post_fernet_keys(keys)
    else:
        await ctx.remote.put_fernet_keys(keys)
    await ctx.map(c.RESOURCE_FERNET_REPO, request.master_id or "keys", "keys")


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
