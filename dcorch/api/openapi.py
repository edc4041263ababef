"""The OpenAPI 3 document of the dcorch v1 API, served at ``GET /openapi.json``.

Hand-written from :mod:`dcorch.api.app`, reading :mod:`dcorch.api.validation`'s field tables.
Clients and the schema-driven fuzz read it: any input it does not describe gets a 4xx, never 5xx.
"""

from __future__ import annotations

from typing import Any

from dcorch.api import validation
from dcorch.api.validation import FieldSpec

_JSON_TYPES = {str: "string", bool: "boolean", int: "integer"}

_ORCH_REQUEST_STATES = ("queued", "in-progress", "failed", "timed-out", "aborted", "completed")


def _body_schema(spec: dict[str, FieldSpec]) -> dict[str, Any]:
    properties: dict[str, Any] = {}
    for name, field in spec.items():
        if field.schema is not None:
            properties[name] = dict(field.schema)
            continue
        prop: dict[str, Any] = {"type": _JSON_TYPES[field.type]}
        if field.choices is not None:
            prop["enum"] = list(field.choices)
        if field.max_length is not None:
            prop["maxLength"] = field.max_length
        properties[name] = prop
    required = [name for name, field in spec.items() if field.required]
    schema: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
    }
    if required:
        schema["required"] = required
    return schema


def _json(schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"application/json": {"schema": schema or {"type": "object"}}}


def _answers(*statuses: int) -> dict[str, Any]:
    descriptions = {
        200: "done",
        400: "bad request (JSON error body naming the problem)",
        401: "missing, invalid or expired token",
        403: "a change needs the admin role on the admin project",
        404: "no such subcloud",
        405: "method not allowed",
        409: "conflict with the subcloud's state",
        503: "database unreachable",
    }
    return {
        str(status): {"description": descriptions[status], "content": _json()}
        for status in statuses
    }


def _body(spec: dict[str, FieldSpec]) -> dict[str, Any]:
    return {"required": True, "content": _json(_body_schema(spec))}


_PROJECT = {"name": "project_id", "in": "path", "required": True, "schema": {"type": "string"}}
_REGION = {
    "name": "region",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$"},
}
_TOKEN: list[dict[str, list[str]]] = [{"token": []}]


def openapi_document(server_url: str | None = None) -> dict[str, Any]:
    """The API description; ``server_url`` fills ``servers`` (the URL the client used)."""
    doc: dict[str, Any] = {
        "openapi": "3.0.3",
        "info": {"title": "dcorch v1 API", "version": "1.0"},
        "components": {
            "securitySchemes": {"token": {"type": "apiKey", "in": "header", "name": "X-Auth-Token"}}
        },
        "paths": {
            "/": {
                "get": {"operationId": "versions", "security": [], "responses": _answers(200)},
            },
            "/health": {
                "get": {"operationId": "health", "security": [], "responses": _answers(200, 503)},
            },
            "/v1.0/{project_id}/subclouds": {
                "parameters": [_PROJECT],
                "get": {"operationId": "list_subclouds", "responses": _answers(200, 401)},
                "post": {
                    "operationId": "add_subcloud",
                    "requestBody": _body(validation.ADD_SUBCLOUD),
                    "responses": _answers(200, 400, 401, 403, 409),
                },
            },
            "/v1.0/{project_id}/subclouds/{region}": {
                "parameters": [_PROJECT, _REGION],
                "get": {"operationId": "show_subcloud", "responses": _answers(200, 401, 404)},
                "put": {
                    "operationId": "update_subcloud",
                    "requestBody": _body(validation.UPDATE_STATES),
                    "responses": _answers(200, 400, 401, 403, 404),
                },
                "delete": {
                    "operationId": "delete_subcloud",
                    "responses": _answers(200, 401, 403, 404),
                },
            },
            "/v1.0/{project_id}/subclouds/{region}/initial-sync": {
                "parameters": [_PROJECT, _REGION],
                "get": {"operationId": "show_initial_sync", "responses": _answers(200, 401, 404)},
                "put": {
                    "operationId": "request_initial_sync",
                    "requestBody": _body(validation.INITIAL_SYNC),
                    "responses": _answers(200, 400, 401, 403, 404, 409),
                },
            },
            "/v1.0/{project_id}/subclouds/{region}/sync-status": {
                "parameters": [_PROJECT, _REGION],
                "get": {"operationId": "sync_status", "responses": _answers(200, 401, 404)},
            },
            "/v1.0/{project_id}/subclouds/{region}/orch-requests": {
                "parameters": [_PROJECT, _REGION],
                "get": {
                    "operationId": "orch_requests",
                    "parameters": [
                        {
                            "name": "state",
                            "in": "query",
                            "required": False,
                            "schema": {
                                "type": "array",
                                "items": {"type": "string", "enum": list(_ORCH_REQUEST_STATES)},
                            },
                            "style": "form",
                            "explode": True,
                        }
                    ],
                    "responses": _answers(200, 400, 401, 404),
                },
            },
        },
        "security": _TOKEN,
    }
    if server_url:
        doc["servers"] = [{"url": server_url.rstrip("/")}]
    return doc
