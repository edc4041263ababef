"""The OpenAPI 3 document of the dcorch v1 API, served at ``GET /openapi.json``.

Generated from the declarations the API checks requests with (:mod:`dcorch.api.validation`'s
body specs, which name the lifecycle's patterns, lengths and choices), so the document cannot
promise what the validator refuses. Every status an operation answers is listed with its body,
errors as ``{"error", "detail"}``; protected operations carry the token scheme (a read needs a
valid token, a change the admin role on the admin project: docs/behaviour.md#dcorch-v1-api); the
add's answer links to the per-subcloud operations, so a client (and schemathesis' stateful
phase) can follow from a created subcloud to its reads and changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dcorch import constants
from dcorch.api import validation
from dcorch.api.validation import BodySpec, FieldSpec
from dcorch.db.rows import SERVICES
from dcorch.lifecycle import REGION_PATTERN, SERVICES_NEEDED
from dcorch.text import NUL_FREE_PATTERN

_JSON_TYPES = {str: "string", bool: "boolean", int: "integer"}


def _field_schema(field: FieldSpec) -> dict[str, Any]:
    if field.schema is not None:
        return dict(field.schema)
    prop: dict[str, Any] = {"type": _JSON_TYPES[field.type]}
    if field.choices is not None:
        prop["enum"] = list(field.choices)
    if field.max_length is not None:
        prop["maxLength"] = field.max_length
    if field.pattern is not None:
        prop["pattern"] = f"^{field.pattern}$"
    elif field.ip_address:
        prop["anyOf"] = [{"format": "ipv4"}, {"format": "ipv6"}]
    elif field.type is str and field.choices is None:
        prop["pattern"] = NUL_FREE_PATTERN
    return prop


def _body_schema(spec: BodySpec) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {name: _field_schema(field) for name, field in spec.fields.items()},
        "additionalProperties": False,
    }
    required = [name for name, field in spec.fields.items() if field.required]
    if required:
        schema["required"] = required
    if spec.empty is not None:
        schema["minProperties"] = 1
    return schema


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


_ERRORS = {
    400: "bad request: the detail names the problem, nothing changed",
    401: "missing, invalid or expired token",
    403: "a change needs the admin role on the admin project",
    404: "no such subcloud (or no such path)",
    405: "the v1 API only reads here (front_doors = rpc): dcmanager's RPC drives the lifecycle",
    409: "conflict with the subcloud's state",
    503: "the master keystone cannot say whether the token is valid",
}


def _answers(ok: dict[str, Any], *errors: int, ok_description: str = "done") -> dict[str, Any]:
    answers: dict[str, Any] = {
        "200": {"description": ok_description, "content": {"application/json": {"schema": ok}}}
    }
    for status in errors:
        answers[str(status)] = {
            "description": _ERRORS[status],
            "content": {"application/json": {"schema": _ref("Error")}},
        }
    return answers


_PROJECT = {"name": "project_id", "in": "path", "required": True, "schema": {"type": "string"}}
_REGION = {
    "name": "region",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": f"^{REGION_PATTERN}$"},
}
_TOKEN: list[dict[str, list[str]]] = [{"token": []}]
_PUBLIC: list[dict[str, list[str]]] = []


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {**schema, "nullable": True}


def _schemas(endpoint_types: Sequence[str]) -> dict[str, Any]:
    text = {"type": "string"}
    time = _nullable({"type": "string", "description": "ISO 8601, UTC, without an offset"})
    return {
        "Error": {
            "type": "object",
            "properties": {"error": text, "detail": text},
            "required": ["error", "detail"],
        },
        "SyncStatus": {
            "type": "object",
            "properties": {
                "sync_request": text,
                "sync_status": text,
                "audit_status": text,
                "last_audit_time": time,
            },
            "required": ["sync_request", "sync_status", "audit_status", "last_audit_time"],
        },
        "SyncStatusByEndpoint": {
            "type": "object",
            "additionalProperties": _ref("SyncStatus"),
            "description": "keyed by endpoint type",
        },
        "Subcloud": {
            "type": "object",
            "properties": {
                "id": {"type": "integer"},
                "uuid": text,
                "region_name": {"type": "string", "pattern": f"^{REGION_PATTERN}$"},
                "software_version": text,
                "management_state": _nullable(text),
                "availability_status": text,
                "initial_sync_state": text,
                "subsequent_sync": {"type": "boolean"},
                "management_ip": text,
                "endpoint_types": {
                    "type": "array",
                    "items": {"type": "string", "enum": list(endpoint_types)},
                },
                "created_at": time,
                "updated_at": time,
                "endpoints": {
                    "type": "object",
                    "properties": dict.fromkeys(SERVICES, text),
                    "additionalProperties": False,
                    "description": "only the service URLs given for this subcloud",
                },
                "sync_status": _ref("SyncStatusByEndpoint"),
            },
            "required": [
                *("id", "region_name", "management_state", "availability_status"),
                *("initial_sync_state", "endpoint_types", "endpoints", "sync_status"),
            ],
        },
        "OrchRequest": {
            "type": "object",
            "properties": {
                "id": {"type": "integer"},
                "uuid": text,
                "state": {"type": "string", "enum": list(validation.ORCH_REQUEST_STATES)},
                "try_count": {"type": "integer"},
                "target_region_name": text,
                "orch_job_id": {"type": "integer"},
                "endpoint_type": text,
                "resource_type": text,
                "operation_type": text,
                "source_resource_id": text,
                "resource_id": {"type": "integer"},
                "master_id": text,
                "created_at": time,
                "updated_at": time,
                "result": _nullable(text),
            },
            "required": ["id", "state", "endpoint_type", "resource_type", "operation_type"],
            "description": "resource_info is left out: it can hold secrets",
        },
    }


def _region_body(**properties: Any) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"subcloud": {"type": "string"}, **properties},
        "required": ["subcloud", *properties],
    }


def _address_rule(endpoint_types: Sequence[str]) -> list[dict[str, Any]]:
    """Without a management IP the URL template has no host: every needed service is given.

    Conservative: it asks for the services the default endpoint types need, whichever a body
    names (docs/behaviour.md#subcloud-endpoints).
    """
    needed = sorted({s for e in endpoint_types for s in SERVICES_NEEDED.get(e, ("keystone",))})
    return [
        {"required": ["management_ip"]},
        {
            "required": ["endpoints"],
            "properties": {"endpoints": {"type": "object", "required": needed}},
        },
    ]


_PER_SUBCLOUD_LINKS = {
    "show_subcloud": "GetSubcloud",
    "update_subcloud": "UpdateSubcloud",
    "delete_subcloud": "DeleteSubcloud",
    "show_initial_sync": "GetInitialSync",
    "request_initial_sync": "RequestInitialSync",
    "sync_status": "GetSyncStatus",
    "orch_requests": "GetOrchRequests",
}


def _links(region: str, description: str) -> dict[str, Any]:
    """From an answer naming a subcloud (``region``: a runtime expression) to its operations."""
    return {
        name: {
            "operationId": operation,
            "parameters": {"project_id": "$request.path.project_id", "region": region},
            "description": description,
        }
        for operation, name in _PER_SUBCLOUD_LINKS.items()
    }


def openapi_document(
    server_url: str | None = None,
    *,
    endpoint_types: Sequence[str] = constants.SYNC_ENDPOINT_TYPES,
    address_required: bool = False,
    read_only: bool = False,
) -> dict[str, Any]:
    """The API description as this service answers it.

    ``server_url`` fills ``servers`` (the URL the client used); ``endpoint_types`` is what this
    System Controller syncs (all an add may name); ``address_required``: subcloud URLs come from
    the template on the management IP; ``read_only``: changes are answered 405 (dcmanager's RPC
    drives the lifecycle). The three are the app's own arguments, so the document tells the truth
    of this deployment.
    """
    change = (400, 401, 403, *((405,) if read_only else ()), 503)
    read = (401, 503)
    add_body = _body_schema(validation.ADD_SUBCLOUD)
    types_schema = add_body["properties"]["endpoint_types"]
    types_schema["items"] = {**types_schema["items"], "enum": list(endpoint_types)}
    if address_required:
        add_body["anyOf"] = _address_rule(endpoint_types)
    added = _answers(
        {
            "type": "object",
            "properties": {"added": _region_body()},
            "required": ["added"],
        },
        *change,
        409,
        ok_description="added: offline and unmanaged, nothing synced yet",
    )
    added["200"]["links"] = _links("$response.body#/added/subcloud", "the subcloud just added")
    subcloud = {
        "type": "object",
        "properties": {"subcloud": _ref("Subcloud")},
        "required": ["subcloud"],
    }
    updated = _answers(subcloud, *change, 404)
    # e.g. managed and online, then its initial sync re-requested
    updated["200"]["links"] = _links("$response.body#/subcloud/region_name", "the subcloud changed")
    listed = _answers(
        {
            "type": "object",
            "properties": {"subclouds": {"type": "array", "items": _ref("Subcloud")}},
            "required": ["subclouds"],
        },
        *read,
    )
    listed["200"]["links"] = _links(
        "$response.body#/subclouds/0/region_name", "the first subcloud listed"
    )
    orch_states = list(validation.ORCH_REQUEST_STATES)
    doc: dict[str, Any] = {
        "openapi": "3.0.3",
        "info": {
            "title": "dcorch v1 API",
            "version": "1.0",
            "description": "Reads need a token the master keystone accepts; changes need the "
            "admin role on the admin project (master.project_name) in the default domain.",
        },
        "components": {
            "securitySchemes": {
                "token": {"type": "apiKey", "in": "header", "name": "X-Auth-Token"}
            },
            "schemas": _schemas(endpoint_types),
        },
        "security": _TOKEN,
        "paths": {
            "/": {
                "get": {
                    "operationId": "versions",
                    "security": _PUBLIC,
                    "responses": _answers(
                        {
                            "type": "object",
                            "properties": {"versions": {"type": "array", "minItems": 1}},
                            "required": ["versions"],
                        }
                    ),
                },
            },
            "/health": {
                "get": {
                    "operationId": "health",
                    "security": _PUBLIC,
                    "responses": {
                        **_answers(
                            {
                                "type": "object",
                                "properties": {
                                    "status": {"type": "string", "enum": ["ok", "degraded"]},
                                    "orch_requests": {
                                        "type": "object",
                                        "additionalProperties": {"type": "integer"},
                                    },
                                    "master": {"type": "object"},
                                    "broker": {"type": "object"},
                                },
                                "required": ["status", "orch_requests"],
                            },
                            ok_description="alive (degraded: a master service or broker down)",
                        ),
                        "503": {
                            "description": "the database is unreachable",
                            "content": {"application/json": {"schema": _ref("Error")}},
                        },
                    },
                },
            },
            "/v1.0/{project_id}/subclouds": {
                "parameters": [_PROJECT],
                "get": {
                    "operationId": "list_subclouds",
                    "security": _TOKEN,
                    "responses": listed,
                },
                "post": {
                    "operationId": "add_subcloud",
                    "security": _TOKEN,
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": add_body}},
                    },
                    "responses": added,
                },
            },
            # The initial sync before the subcloud's update: a client (schemathesis' fuzzing)
            # working down the document re-requests it while the listed subclouds are ready.
            "/v1.0/{project_id}/subclouds/{region}/initial-sync": {
                "parameters": [_PROJECT, _REGION],
                "get": {
                    "operationId": "show_initial_sync",
                    "security": _TOKEN,
                    "responses": _answers(
                        _region_body(
                            initial_sync_state={"type": "string"},
                            last_error=_nullable({"type": "object"}),
                        ),
                        *read,
                        404,
                    ),
                },
                "put": {
                    "operationId": "request_initial_sync",
                    "security": _TOKEN,
                    "requestBody": _body(validation.INITIAL_SYNC),
                    "responses": _answers(
                        _region_body(
                            initial_sync_state={
                                "type": "string",
                                "enum": [constants.INITIAL_SYNC_REQUESTED],
                            }
                        ),
                        *change,
                        404,
                        409,
                    ),
                },
            },
            "/v1.0/{project_id}/subclouds/{region}": {
                "parameters": [_PROJECT, _REGION],
                "get": {
                    "operationId": "show_subcloud",
                    "security": _TOKEN,
                    "responses": _answers(subcloud, *read, 404),
                },
                "put": {
                    "operationId": "update_subcloud",
                    "security": _TOKEN,
                    "requestBody": _body(validation.UPDATE_STATES),
                    "responses": updated,
                },
                "delete": {
                    "operationId": "delete_subcloud",
                    "security": _TOKEN,
                    "responses": _answers(
                        {
                            "type": "object",
                            "properties": {"deleted": _region_body()},
                            "required": ["deleted"],
                        },
                        *(s for s in change if s != 400),
                        404,
                    ),
                },
            },
            "/v1.0/{project_id}/subclouds/{region}/sync-status": {
                "parameters": [_PROJECT, _REGION],
                "get": {
                    "operationId": "sync_status",
                    "security": _TOKEN,
                    "responses": _answers(
                        _region_body(endpoints=_ref("SyncStatusByEndpoint")), *read, 404
                    ),
                },
            },
            "/v1.0/{project_id}/subclouds/{region}/orch-requests": {
                "parameters": [_PROJECT, _REGION],
                "get": {
                    "operationId": "orch_requests",
                    "security": _TOKEN,
                    "parameters": [
                        {
                            "name": "state",
                            "in": "query",
                            "required": False,
                            "description": "default: the pending states; completed lists the "
                            "latest completed requests not purged yet",
                            "schema": {
                                "type": "array",
                                "items": {"type": "string", "enum": orch_states},
                            },
                            "style": "form",
                            "explode": True,
                        }
                    ],
                    "responses": _answers(
                        _region_body(orch_requests={"type": "array", "items": _ref("OrchRequest")}),
                        400,
                        *read,
                        404,
                    ),
                },
            },
        },
    }
    if server_url:
        doc["servers"] = [{"url": server_url.rstrip("/")}]
    return doc


def _body(spec: BodySpec) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": _body_schema(spec)}}}
