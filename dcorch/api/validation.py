"""Strict parsing of dcorch v1 API request bodies.

Upstream ``eval``-ed request bodies; here a body is JSON or rejected, and every field's presence,
type and allowed values are checked before the database is touched: a rejection changes nothing.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass
from typing import Any

from dcorch import constants

_REGION_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$")


class BadRequest(ValueError):
    """The request body is not acceptable; the message names the problem."""


@dataclass(frozen=True, slots=True)
class FieldSpec:
    type: type
    required: bool = False
    choices: tuple[str, ...] | None = None


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """Decode a request body that must be one JSON object."""
    if not raw.strip():
        raise BadRequest("body required")
    try:
        value = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest(f"body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise BadRequest("body must be a JSON object")
    return value


def check_fields(body: dict[str, Any], spec: dict[str, FieldSpec]) -> dict[str, Any]:
    """Reject unknown fields, missing required ones, wrong types and values out of range."""
    unknown = sorted(set(body) - set(spec))
    if unknown:
        raise BadRequest(f"unknown field(s): {', '.join(unknown)}")
    for name, field in spec.items():
        if name not in body:
            if field.required:
                raise BadRequest(f"{name} required")
            continue
        value = body[name]
        if not isinstance(value, field.type) or isinstance(value, bool) != (field.type is bool):
            raise BadRequest(f"{name} must be a {field.type.__name__}, got {type(value).__name__}")
        if field.choices is not None and value not in field.choices:
            raise BadRequest(f"{name} must be one of {', '.join(field.choices)}, got {value!r}")
    return body


def check_region(region: str) -> str:
    """A region name as it appears in URLs and in ``subcloud.region_name``."""
    if not _REGION_PATTERN.match(region):
        raise BadRequest(f"invalid subcloud region name {region!r}")
    return region


def check_ip(text: str, name: str = "management_ip") -> str:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        raise BadRequest(f"{name} must be an IP address, got {text!r}") from None
    return text


ADD_SUBCLOUD = {
    "subcloud": FieldSpec(str, required=True),
    "management_ip": FieldSpec(str),
    "software_version": FieldSpec(str),
}

UPDATE_STATES = {
    "management_state": FieldSpec(
        str, choices=(constants.MANAGEMENT_MANAGED, constants.MANAGEMENT_UNMANAGED)
    ),
    "availability_status": FieldSpec(
        str, choices=(constants.AVAILABILITY_ONLINE, constants.AVAILABILITY_OFFLINE)
    ),
    "software_version": FieldSpec(str),
    "management_ip": FieldSpec(str),
}

INITIAL_SYNC = {
    "initial_sync_state": FieldSpec(
        str, required=True, choices=(constants.INITIAL_SYNC_REQUESTED,)
    ),
}
