"""sysinv v1 subset: certificates, the sysadmin ``iuser`` and the fernet key repository.

Error bodies use sysinv's ``{"error_message": "{\\"faultstring\\": ...}"}`` shape. Access follows
StarlingX's base rules: a change needs the ``admin`` role, a read the ``reader`` role, on a token
of the ``admin`` or ``services`` project (403 otherwise). Keystone's bootstrap makes ``admin``,
``manager`` and ``member`` imply ``reader`` and its tokens carry the implied roles; the simulated
keystone's do not, so a read accepts any of the four.
``PUT /v1/fernet_repo`` replaces keystone's signing keys, changing which tokens validate.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import UTC, datetime
from typing import Any, Final

from dcorch.sim.certs import PemCert, parse_multipart, parse_pem_certs
from dcorch.sim.endpoints import SYSINV
from dcorch.sim.http import Request, Response, SysinvError, json_response
from dcorch.sim.keystone_auth import require_token
from dcorch.sim.keystone_policy import has_role
from dcorch.sim.records import Record, iso
from dcorch.sim.routes import RouteTable
from dcorch.sim.state import CloudState
from dcorch.sim.tokens import TokenPayload

Params = tuple[str, ...]
CERT_MODES: Final = frozenset(
    {"ssl", "ssl_ca", "docker_registry", "openstack", "openstack_ca", "openldap"}
)
CA_MODES: Final = frozenset({"ssl_ca", "openstack_ca"})
IUSER_FIELDS: Final = frozenset(
    {"root_sig", "passwd_hash", "passwd_expiry_days", "passwd_last_change", "reserved_1"}
)
SYSTEM_PROJECTS: Final = frozenset({"admin", "services"})
READER_ROLES: Final = ("admin", "manager", "member", "reader")
"""``reader`` and the roles keystone's bootstrap makes imply it."""
FORBIDDEN: Final = "Access was denied to this resource."
"""webob's text for the 403 sysinv's access hook raises."""


def _allowed(cloud: CloudState, req: Request, roles: tuple[str, ...]) -> TokenPayload:
    """The caller's token (401 if invalid) holding one of ``roles`` on a system project (403)."""
    token = require_token(cloud, req, SysinvError)
    project = cloud.identity.projects.get(token.project_id or "")
    in_system_project = project is not None and project["project"]["name"] in SYSTEM_PROJECTS
    if not in_system_project or not any(has_role(cloud.identity, token, r) for r in roles):
        raise SysinvError(403, FORBIDDEN)
    return token


def require_admin(cloud: CloudState, req: Request) -> TokenPayload:
    """What a change needs: ``admin`` on the admin or services project."""
    return _allowed(cloud, req, ("admin",))


def require_reader(cloud: CloudState, req: Request) -> TokenPayload:
    """What a read needs: ``reader`` (or a role implying it) on the admin or services project."""
    return _allowed(cloud, req, READER_ROLES)


def version_doc(cloud: CloudState, req: Request, params: Params) -> Response:
    """``GET /v1`` (no token needed)."""
    return json_response(
        200,
        {
            "id": "v1",
            "links": [{"rel": "self", "href": req.base_url + "/"}],
            "media_types": [{"base": "application/json"}],
        },
    )


def install_certificate(cloud: CloudState, req: Request, params: Params) -> Response:
    """``POST /v1/certificate/certificate_install`` (multipart: file, mode, passphrase).

    Answers as sysinv's ``certificate_install``: 200 with ``{"success", "error", "body",
    "certificates": [<installed certificate record>, ...]}``, one record per installed
    certificate, each with its signature; a refusal is a 200 with an ``error`` text and no
    certificates. A CA bundle installs its valid certificates and names the others in
    ``error``. The master writes each installed CA to its CA directory, as a System Controller
    keeps them on disk.
    """
    require_admin(cloud, req)
    try:
        form = parse_multipart(req.body, req.header("content-type") or "")
    except ValueError as exc:
        raise SysinvError(400, str(exc)) from None
    if "file" not in form:
        raise SysinvError(400, "Missing required field: file")
    mode = form.get("mode", b"ssl").decode("utf-8", "replace") or "ssl"
    if mode not in CERT_MODES:
        return _refused(f"Invalid mode: {mode}")
    try:
        certs = parse_pem_certs(form["file"].decode("utf-8", "replace"))
    except ValueError as exc:
        return _refused(f"No certificates have been added, {exc}")
    if not certs:
        return _refused("No certificates have been added, no valid certificates found in file.")
    now = datetime.fromtimestamp(cloud.sim.wall_clock(), UTC)
    errors, valid = [], []
    for index, pem in enumerate(certs):
        invalid = pem.validity_error(now)
        if invalid is None and mode == "ssl_ca" and not pem.is_ca:
            return _refused("Cannot install non-CA type certificate as SSL CA certificate")
        if invalid is None:
            valid.append(pem)
        elif len(certs) == 1:
            return _refused(invalid)
        else:
            errors.append(f"Error with cert number {index + 1} in the file: {invalid}")
    if mode != "ssl_ca":
        valid = valid[:1]
    installed = [_store_certificate(cloud, pem, mode) for pem in valid]
    return json_response(
        200, {"success": "", "error": "\n".join(errors), "body": "", "certificates": installed}
    )


def _refused(message: str) -> Response:
    """sysinv's answer to an install it refuses: 200, the reason in ``error``."""
    return json_response(200, {"success": "", "error": message})


def _store_certificate(cloud: CloudState, pem: PemCert, mode: str) -> Record:
    """Create or update the record (same signature for ``ssl_ca``, same mode otherwise)."""
    platform = cloud.platform
    signature = pem.signature(mode)
    key, value = ("signature", signature) if mode == "ssl_ca" else ("certtype", mode)
    previous = next((c for c in platform.certificates.values() if c[key] == value), None)
    cert_uuid = previous["uuid"] if previous else str(uuid.uuid4())
    now = iso(cloud.sim.wall_clock())
    record: Record = {
        "uuid": cert_uuid,
        "certtype": mode,
        "signature": signature,
        "start_date": pem.start_date,
        "expiry_date": pem.expiry_date,
        "subject": pem.subject,
        "issuer": pem.issuer,
        "is_ca": mode in CA_MODES,
        "details": None,
        "created_at": previous["created_at"] if previous else now,
        "updated_at": now if previous else None,
    }
    platform.certificates[cert_uuid] = record
    if cloud.is_master and mode in CA_MODES:
        cloud.sim.master_ca_files.stage_write(mode, signature, pem.text)
    cloud.record(SYSINV, "install_certificate", signature=signature, mode=mode)
    return dict(record)


def list_certificates(cloud: CloudState, req: Request, params: Params) -> Response:
    require_reader(cloud, req)
    return json_response(200, {"certificates": list(cloud.platform.certificates.values())})


def _cert(cloud: CloudState, cert_uuid: str) -> Record:
    cert = cloud.platform.certificates.get(cert_uuid)
    if cert is None:
        raise SysinvError(404, f"No certificate with uuid {cert_uuid}")
    return cert


def get_certificate(cloud: CloudState, req: Request, params: Params) -> Response:
    require_reader(cloud, req)
    return json_response(200, _cert(cloud, params[0]))


def delete_certificate(cloud: CloudState, req: Request, params: Params) -> Response:
    """``DELETE /v1/certificate/{uuid}``: 200 with the removed certificate."""
    require_admin(cloud, req)
    cert = _cert(cloud, params[0])
    del cloud.platform.certificates[params[0]]
    if cloud.is_master:
        cloud.sim.master_ca_files.stage_remove(cert["certtype"], cert["signature"])
    cloud.record(SYSINV, "delete_certificate", signature=cert["signature"])
    return json_response(200, cert)


def list_iusers(cloud: CloudState, req: Request, params: Params) -> Response:
    require_reader(cloud, req)
    return json_response(200, {"iusers": [cloud.platform.iuser]})


def get_iuser(cloud: CloudState, req: Request, params: Params) -> Response:
    require_reader(cloud, req)
    if params[0] != cloud.platform.iuser["uuid"]:
        raise SysinvError(404, f"No iuser with uuid {params[0]}")
    return json_response(200, cloud.platform.iuser)


def patch_iuser(cloud: CloudState, req: Request, params: Params) -> Response:
    """``PATCH`` / ``PUT /v1/iuser/{uuid}`` with a JSON-patch list (``replace`` ops)."""
    require_admin(cloud, req)
    platform = cloud.platform
    if params[0] != platform.iuser["uuid"]:
        raise SysinvError(404, f"No iuser with uuid {params[0]}")
    patch = req.json(SysinvError)
    if not isinstance(patch, list):
        raise SysinvError(400, "Patch must be a list of operations")
    changes: dict[str, Any] = {}
    for op in patch:
        if not isinstance(op, dict) or op.get("op") not in {"replace", "add"}:
            raise SysinvError(400, f"Invalid patch operation {op!r}")
        field = str(op.get("path", "")).lstrip("/")
        if field not in IUSER_FIELDS:
            raise SysinvError(400, f"Invalid attribute for iuser: {op.get('path')}")
        if "value" not in op:
            raise SysinvError(400, f"Patch operation on {field} has no value")
        changes[field] = op["value"]
    platform.iuser = {**platform.iuser, **changes}
    cloud.record(SYSINV, "patch_iuser", fields=sorted(changes))
    return json_response(200, platform.iuser)


def _key_list(cloud: CloudState) -> list[dict[str, Any]]:
    return [{"id": i, "key": k} for i, k in sorted(cloud.platform.fernet_keys.items())]


def get_fernet_repo(cloud: CloudState, req: Request, params: Params) -> Response:
    """``GET /v1/fernet_repo``: the key list ``[{"id": int, "key": str}]``."""
    require_reader(cloud, req)
    return json_response(200, _key_list(cloud))


def set_fernet_repo(cloud: CloudState, req: Request, params: Params) -> Response:
    """``POST`` (201) / ``PUT`` (200) ``/v1/fernet_repo``: replace the whole key set."""
    require_admin(cloud, req)
    body = req.json(SysinvError)
    if not isinstance(body, list) or not body:
        raise SysinvError(400, "Fernet keys must be a non-empty list of {id, key}")
    keys: dict[int, str] = {}
    for item in body:
        if not isinstance(item, dict) or isinstance(item.get("id"), bool):
            raise SysinvError(400, f"Invalid fernet key entry {item!r}")
        key_id, key = item.get("id"), item.get("key")
        if not isinstance(key_id, int) or not isinstance(key, str) or not _valid_key(key):
            raise SysinvError(400, f"Invalid fernet key entry {item!r}")
        keys[key_id] = key
    cloud.platform.set_fernet_keys(keys)
    cloud.record(SYSINV, f"{req.method.lower()}_fernet_repo", ids=sorted(keys))
    return json_response(201 if req.method == "POST" else 200, _key_list(cloud))


def _valid_key(key: str) -> bool:
    try:
        return len(base64.urlsafe_b64decode(key.encode())) == 32
    except (binascii.Error, ValueError):
        return False


ROUTES = RouteTable(SYSINV, SysinvError)
ROUTES.add("", GET=version_doc)
ROUTES.add("certificate", GET=list_certificates)
ROUTES.add("certificate/certificate_install", POST=install_certificate)
ROUTES.add("certificate/{}", GET=get_certificate, DELETE=delete_certificate)
ROUTES.add("iuser", GET=list_iusers)
ROUTES.add("iuser/{}", GET=get_iuser, PATCH=patch_iuser, PUT=patch_iuser)
ROUTES.add("fernet_repo", GET=get_fernet_repo, POST=set_fernet_repo, PUT=set_fernet_repo)
