"""Strict parsing of dcorch v1 API request bodies.

Upstream ``eval``-ed request bodies; here a body is JSON or rejected, and every field's presence,
type and allowed values are checked before the database is touched: a rejection changes nothing.
The values themselves (region names, IPs, URLs, endpoint types) are checked by the subcloud
lifecycle, which the RPC front door shares (``dcorch.lifecycle``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from dcorch import constants
from dcorch.db.rows import SERVICES
from dcorch.lifecycle import (
    AVAILABILITY_STATES,
    IP_LENGTH,
    MANAGEMENT_STATES,
    NAME_LENGTH,
    REGION_PATTERN,
    InvalidInput,
    check_text,
)
from dcorch.urls import SERVICE_URL_PATTERN

_JSON_NAMES: dict[type, str] = {dict: "JSON object", list: "JSON list"}


class BadRequest(InvalidInput):
    """The request body is not acceptable; the message names the problem."""


@dataclass(frozen=True, slots=True)
class FieldSpec:
    type: type
    required: bool = False
    choices: tuple[str, ...] | None = None
    schema: dict[str, Any] | None = None
    """The OpenAPI schema of a structured field (an object or array), checked by the handler."""
    max_length: int | None = None
    """A text field's column length: longer text is refused, not cut (PostgreSQL would raise)."""
    pattern: str | None = None
    """What the whole text must match; the lifecycle's check of the value enforces it (with its
    own message), this declares it to the OpenAPI document."""
    ip_address: bool = False
    """An IPv4 or IPv6 address (the lifecycle's ``check_ip``), declared as such to OpenAPI."""


@dataclass(frozen=True, slots=True)
class BodySpec:
    """A request body: its fields, and what an empty one means."""

    fields: dict[str, FieldSpec]
    empty: str | None = None
    """Why ``{}`` is refused (None: an empty body object is fine when nothing is required)."""


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """Decode a request body that must be one JSON object."""
    if not raw.strip():
        raise BadRequest("body required")
    try:
        value = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest(f"body is not valid JSON: {exc}") from None
    except RecursionError:  # json's parser recurses per level: ``[[[[...`` a thousand deep
        raise BadRequest("body is not valid JSON: nested too deeply") from None
    if not isinstance(value, dict):
        raise BadRequest("body must be a JSON object")
    return value


def check_fields(body: dict[str, Any], spec: BodySpec) -> dict[str, Any]:
    """Reject unknown fields, missing required ones, wrong types and values out of range."""
    unknown = sorted(set(body) - set(spec.fields))
    if unknown:
        raise BadRequest(f"unknown field(s): {', '.join(unknown)}")
    if not body and spec.empty is not None:
        raise BadRequest(spec.empty)
    for name, field in spec.fields.items():
        if name not in body:
            if field.required:
                raise BadRequest(f"{name} required")
            continue
        value = body[name]
        if not isinstance(value, field.type) or isinstance(value, bool) != (field.type is bool):
            expected = _JSON_NAMES.get(field.type, field.type.__name__)
            raise BadRequest(f"{name} must be a {expected}, got {type(value).__name__}")
        if field.choices is not None and value not in field.choices:
            raise BadRequest(f"{name} must be one of {', '.join(field.choices)}, got {value!r}")
        if isinstance(value, str):
            check_text(value, name, field.max_length)
    return body


_ENDPOINTS_SCHEMA = {
    "type": "object",
    "properties": {
        name: {"type": "string", "pattern": f"^{SERVICE_URL_PATTERN}$"} for name in SERVICES
    },
    "additionalProperties": False,
    "description": "URLs of this subcloud's services (with or without the version); "
    "a service not given comes from the [subcloud] template on the management IP",
}

ADD_SUBCLOUD = BodySpec(
    {
        "subcloud": FieldSpec(str, required=True, max_length=NAME_LENGTH, pattern=REGION_PATTERN),
        "management_ip": FieldSpec(str, max_length=IP_LENGTH, ip_address=True),
        "software_version": FieldSpec(str, max_length=NAME_LENGTH),
        "endpoints": FieldSpec(dict, schema=_ENDPOINTS_SCHEMA),
        "endpoint_types": FieldSpec(
            list,
            schema={
                "type": "array",
                "items": {"type": "string", "enum": list(constants.SYNC_ENDPOINT_TYPES)},
                "minItems": 1,
                "uniqueItems": True,
                "description": "the endpoint types this subcloud syncs (default: every one the "
                "System Controller syncs; platform needs master.sysinv_url)",
            },
        ),
    }
)

UPDATE_STATES = BodySpec(
    {
        "management_state": FieldSpec(str, choices=MANAGEMENT_STATES),
        "availability_status": FieldSpec(str, choices=AVAILABILITY_STATES),
        "software_version": FieldSpec(str, max_length=NAME_LENGTH),
        "management_ip": FieldSpec(str, max_length=IP_LENGTH, ip_address=True),
        "endpoints": FieldSpec(dict, schema=_ENDPOINTS_SCHEMA),
    },
    empty="nothing to update",
)

INITIAL_SYNC = BodySpec(
    {
        "initial_sync_state": FieldSpec(
            str, required=True, choices=(constants.INITIAL_SYNC_REQUESTED,)
        ),
    }
)

ORCH_REQUEST_STATES = (
    constants.ORCH_REQUEST_QUEUED,
    constants.ORCH_REQUEST_IN_PROGRESS,
    constants.ORCH_REQUEST_FAILED,
    constants.ORCH_REQUEST_TIMED_OUT,
    constants.ORCH_REQUEST_ABORTED,
    constants.ORCH_REQUEST_COMPLETED,
)
"""What ``orch-requests?state=`` may name."""
