"""Strict parsing of dcorch v1 API request bodies.

Upstream ``eval``-ed request bodies; here a body is JSON or rejected, and every field's presence,
type and allowed values are checked before the database is touched: a rejection changes nothing.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from dcorch import constants
from dcorch.db.rows import SERVICES, GivenEndpoints
from dcorch.text import storable_text
from dcorch.urls import http_url_problem

_JSON_NAMES: dict[type, str] = {dict: "JSON object", list: "JSON list"}

_REGION_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,254}")
NAME_LENGTH = 255
"""``subcloud.region_name`` and ``software_version`` are VARCHAR(255)."""
IP_LENGTH = 64
"""``subcloud.management_ip`` is VARCHAR(64) (an IPv6 address with a long zone id is not)."""


class BadRequest(ValueError):
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
            expected = _JSON_NAMES.get(field.type, field.type.__name__)
            raise BadRequest(f"{name} must be a {expected}, got {type(value).__name__}")
        if field.choices is not None and value not in field.choices:
            raise BadRequest(f"{name} must be one of {', '.join(field.choices)}, got {value!r}")
        if isinstance(value, str):
            check_text(value, name, field.max_length)
    return body


def check_text(value: str, name: str, max_length: int | None = None) -> str:
    """A text field the database can store as given (:mod:`dcorch.text`; a value longer than its
    column was a 500 on PostgreSQL, found by ``./just fuzz``)."""
    if not storable_text(value):
        raise BadRequest(f"{name} holds a NUL or a lone surrogate")
    if max_length is not None and len(value) > max_length:
        raise BadRequest(f"{name} is longer than {max_length} characters")
    return value


def check_region(region: str) -> str:
    """A region name as it appears in URLs and in ``subcloud.region_name``."""
    if not _REGION_PATTERN.fullmatch(region):  # not match: ``$`` lets a final newline in
        raise BadRequest(f"invalid subcloud region name {region!r}")
    return region


def check_ip(text: str, name: str = "management_ip") -> str:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        raise BadRequest(f"{name} must be an IP address, got {text!r}") from None
    return text


def check_endpoints(value: dict[str, Any]) -> dict[str, str]:
    """``{"keystone"|"sysinv"|"dcdbsync": absolute http(s) URL}``; trailing ``/`` dropped."""
    unknown = sorted(set(value) - set(SERVICES))
    if unknown:
        raise BadRequest(
            f"endpoints: unknown service(s) {', '.join(unknown)} (known: {', '.join(SERVICES)})"
        )
    urls: dict[str, str] = {}
    for name, url in value.items():
        if not isinstance(url, str):
            raise BadRequest(f"endpoints.{name} must be a string, got {type(url).__name__}")
        if problem := http_url_problem(url):
            raise BadRequest(f"endpoints.{name} {problem}")
        urls[name] = url.rstrip("/")
    return urls


def check_endpoint_types(value: list[Any], enabled: Sequence[str]) -> tuple[str, ...]:
    """A non-empty subset of the endpoint types this System Controller syncs, in its order."""
    if not value:
        raise BadRequest(f"endpoint_types must name at least one of {', '.join(enabled)}")
    for item in value:
        if not isinstance(item, str):
            raise BadRequest(f"endpoint_types must hold strings, got {type(item).__name__}")
        if item not in enabled:
            why = (
                " (off: master.sysinv_url is empty)"
                if item in constants.SYNC_ENDPOINT_TYPES
                else ""
            )
            raise BadRequest(
                f"endpoint_types: {item!r} is not synced here{why}; "
                f"choose from {', '.join(enabled)}"
            )
    if len(set(value)) != len(value):
        raise BadRequest("endpoint_types must not repeat a type")
    return tuple(e for e in enabled if e in value)


SERVICES_NEEDED = {
    constants.ENDPOINT_TYPE_IDENTITY: ("keystone", "dcdbsync"),
    constants.ENDPOINT_TYPE_PLATFORM: ("keystone", "sysinv"),
}
"""The subcloud services each endpoint type's sync talks to."""


def check_address(
    management_ip: str, endpoints: GivenEndpoints, endpoint_types: Sequence[str]
) -> None:
    """Without a management IP the template has no host: each needed service must be given."""
    if management_ip:
        return
    given = endpoints.given()
    needed = sorted({s for e in endpoint_types for s in SERVICES_NEEDED.get(e, ("keystone",))})
    missing = [s for s in needed if s not in given]
    if missing:
        raise BadRequest(
            "management_ip required: the subcloud URL template builds "
            f"{', '.join(missing)} from it (or give endpoints.{', endpoints.'.join(missing)})"
        )


_ENDPOINTS_SCHEMA = {
    "type": "object",
    "properties": {name: {"type": "string", "format": "uri"} for name in SERVICES},
    "additionalProperties": False,
    "description": "URLs of this subcloud's services (with or without the version); "
    "a service not given comes from the [subcloud] template on the management IP",
}

ADD_SUBCLOUD = {
    "subcloud": FieldSpec(str, required=True, max_length=NAME_LENGTH),
    "management_ip": FieldSpec(str, max_length=IP_LENGTH),
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

UPDATE_STATES = {
    "management_state": FieldSpec(
        str, choices=(constants.MANAGEMENT_MANAGED, constants.MANAGEMENT_UNMANAGED)
    ),
    "availability_status": FieldSpec(
        str, choices=(constants.AVAILABILITY_ONLINE, constants.AVAILABILITY_OFFLINE)
    ),
    "software_version": FieldSpec(str, max_length=NAME_LENGTH),
    "management_ip": FieldSpec(str, max_length=IP_LENGTH),
    "endpoints": FieldSpec(dict, schema=_ENDPOINTS_SCHEMA),
}

INITIAL_SYNC = {
    "initial_sync_state": FieldSpec(
        str, required=True, choices=(constants.INITIAL_SYNC_REQUESTED,)
    ),
}
