"""The record contract's rules on their own (no server): what is accepted, how it is normalised."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from dcorch.dbsync.contract import (
    RecordError,
    check_row,
    complete_record,
    format_datetime,
    merge_record,
    parse_event,
    parse_record,
    parse_user_event_id,
    user_event_id,
)
from dcorch.sim.keystone_tables import KEYSTONE_SPECS as SPECS


def test_datetimes_have_one_canonical_text() -> None:
    row = check_row(
        SPECS["user"],
        {"created_at": "2026-01-02 03:04:05", "last_active_at": "2026-01-02T10:00:00"},
        "user",
        complete=False,
    )
    assert row == {"created_at": "2026-01-02T03:04:05.000000", "last_active_at": "2026-01-02"}
    east = datetime(2026, 1, 2, 5, 4, 5, 7, tzinfo=timezone(timedelta(hours=2)))
    assert format_datetime(east) == "2026-01-02T03:04:05.000007"
    zulu = check_row(SPECS["user"], {"created_at": "2026-01-02T03:04:05Z"}, "user", complete=False)
    assert zulu["created_at"] == "2026-01-02T03:04:05.000000"


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"enabled": 1}, r"user.enabled must be true or false"),
        ({"id": None}, r"user.id may not be null"),
        ({"id": "x" * 65}, r"user.id is longer than 64 characters"),
        ({"created_at": 5}, r"user.created_at must be a date/time text"),
        ({"created_at": "soon"}, r"user.created_at is not a valid date/time: 'soon'"),
        ({"nickname": "x"}, r"user.nickname is not a column of keystone's user table"),
        ({"id": "\ud800"}, r"user.id holds a NUL or a lone surrogate"),
        ({"domain_id": "a\x00b"}, r"user.domain_id holds a NUL or a lone surrogate"),
        ({"extra": "x\udfffy"}, r"user.extra holds a NUL or a lone surrogate"),
    ],
)
def test_bad_columns_are_named(row: dict[str, object], message: str) -> None:
    with pytest.raises(RecordError, match=message) as raised:
        check_row(SPECS["user"], row, "user", complete=False)
    assert raised.value.status == 400


def test_integers_are_checked_against_their_column_width() -> None:
    spec = SPECS["password"]
    ok = {"created_at": "2026-01-01", "created_at_int": 2**62}
    assert check_row(spec, ok, "p", complete=True)["created_at_int"] == 2**62
    with pytest.raises(RecordError, match=r"p\.created_at_int is out of range"):
        check_row(spec, {**ok, "created_at_int": 2**64}, "p", complete=True)
    with pytest.raises(RecordError, match=r"local_user\.failed_auth_count is out of range"):
        check_row(SPECS["local_user"], {"failed_auth_count": 2**40}, "local_user", complete=False)
    with pytest.raises(RecordError, match="must be an integer"):
        check_row(spec, {**ok, "created_at_int": True}, "p", complete=True)


def test_server_set_columns_are_dropped_and_required_ones_demanded() -> None:
    row = check_row(
        SPECS["password"],
        {"id": 5, "local_user_id": 9, "created_at": "2026-01-01T00:00:00"},
        "password[0]",
        complete=True,
    )
    assert row == {"created_at": "2026-01-01T00:00:00.000000"}
    with pytest.raises(RecordError, match=r"password\[0\].created_at is required"):
        check_row(SPECS["password"], {"password_hash": "h"}, "password[0]", complete=True)


def test_a_replace_merges_objects_and_replaces_the_lists_it_carries() -> None:
    old: dict[str, Any] = {
        "user": {"id": "u", "enabled": True, "domain_id": "default"},
        "local_user": {"name": "a", "domain_id": "default"},
        "password": [{"password_hash": "old"}],
        "user_option": [{"option_id": "1000"}],
    }
    given = parse_record(
        "users", {"user": {"enabled": False}, "local_user": {}, "user_option": []}, SPECS
    )
    merged = merge_record("users", old, given)
    assert merged == {**old, "user": {**old["user"], "enabled": False}, "user_option": []}
    assert complete_record("users", merged, SPECS) is merged


@pytest.mark.parametrize(
    ("kind", "body", "message"),
    [
        ("users", [], "Body required"),
        ("users", {"local_user": {}}, "user record required"),
        ("users", {"user": {}}, "local_user record required"),
        ("users", {"user": {}, "local_user": {}, "groups": []}, "unknown section 'groups'"),
        ("users", {"user": {}, "local_user": {}, "password": {}}, "password must be a list"),
        ("groups", {"group": {}, "local_user_ids": "u"}, "must be a list of user ids"),
        ("groups", {"group": {}, "local_user_ids": ["u", "u"]}, "lists a user twice"),
    ],
)
def test_record_shapes(kind: str, body: object, message: str) -> None:
    with pytest.raises(RecordError, match=message):
        parse_record(kind, body, SPECS)


def test_complete_records_need_ids_names_members_and_one_domain() -> None:
    user = {
        "user": {"id": "u", "domain_id": "default"},
        "local_user": {"name": "a", "domain_id": "default", "user_id": "u"},
    }
    assert complete_record("users", user, SPECS) is user
    other = {**user, "local_user": {**user["local_user"], "domain_id": "d2"}}
    with pytest.raises(RecordError, match=r"local_user\.domain_id must equal user\.domain_id"):
        complete_record("users", other, SPECS)
    with pytest.raises(RecordError, match="Group name required"):
        complete_record("groups", {"group": {"id": "g", "domain_id": "d", "name": ""}}, SPECS)
    with pytest.raises(RecordError, match="local_user_ids required"):
        complete_record("groups", {"group": {"id": "g", "domain_id": "d", "name": "n"}}, SPECS)
    with pytest.raises(RecordError, match="project id required"):
        complete_record("projects", {"project": {"id": "", "domain_id": "d", "name": "n"}}, SPECS)


def test_revocation_events_need_an_owner_and_keystones_not_null_columns() -> None:
    spec = SPECS["revocation_event"]
    times = {"issued_before": "2026-01-01T00:00:00", "revoked_at": "2026-01-01T00:00:01"}
    event = parse_event({"revocation_event": {"id": 3, "audit_id": "a", **times}}, spec)
    canonical = {
        "issued_before": "2026-01-01T00:00:00.000000",
        "revoked_at": "2026-01-01T00:00:01.000000",
    }
    assert event == {"audit_id": "a", **canonical}
    with pytest.raises(RecordError, match="audit_id or user_id required"):
        parse_event({"revocation_event": times}, spec)
    with pytest.raises(RecordError, match="revoked_at is required"):
        parse_event({"revocation_event": {"user_id": "u", "issued_before": "2026-01-01"}}, spec)
    with pytest.raises(RecordError, match="revocation_event record required"):
        parse_event({"event": {}}, spec)
    with pytest.raises(RecordError, match="cannot be named in a URL"):
        parse_event({"revocation_event": {"audit_id": "a/b", **times}}, spec)
    # found by ./just fuzz: stored by the agent, then not found by users/<event id>
    with pytest.raises(RecordError, match="audit_id may not be empty"):
        parse_event({"revocation_event": {"audit_id": "", "user_id": "u", **times}}, spec)


def test_user_event_ids_round_trip_and_bad_ones_are_404() -> None:
    key = user_event_id("u1", "2026-01-02T03:04:05.000006")
    assert parse_user_event_id(key) == ("u1", datetime(2026, 1, 2, 3, 4, 5, 6))
    for bad in ("%%%", user_event_id("u1", "not-a-time"), "bm91bmRlcnNjb3Jl"):
        with pytest.raises(RecordError, match="Invalid event ID format") as raised:
            parse_user_event_id(bad)
        assert raised.value.status == 404


@pytest.mark.parametrize("oid", ["a/b", "../../etc/passwd", ".", ".."])
def test_ids_no_url_can_name_are_refused(oid: str) -> None:
    """Found by ./just fuzz: both servers stored them, then answered 404 for them."""
    record = {"role": {"id": oid, "name": "r", "domain_id": "<<null>>"}}
    with pytest.raises(RecordError, match="cannot be named in a URL") as raised:
        complete_record("roles", record, SPECS)
    assert raised.value.status == 400
