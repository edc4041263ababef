"""The audit id of a fernet token.

See docs/behaviour.md#token-revocation-audit-id and docs/behaviour.md#proxy-weak-spots.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence

import httpx
import msgpack
import pytest
from cryptography.fernet import Fernet

from dcorch.proxy.fernet_audit import (
    AuditIdError,
    FernetKeysUnavailable,
    audit_id_from_payload,
    audit_id_from_token,
    extract_audit_id,
    parse_fernet_repo,
)
from tests.proxy.fakes import (
    SERVICE_TOKEN,
    FakeMaster,
    keystone_audit_id,
    make_fernet_token,
    service_fernet_keys,
)

AUDIT = b"\xfb\xff\x00audit-bytes!"


def key() -> str:
    return Fernet.generate_key().decode()


def test_audit_id_of_a_keystone_token() -> None:
    keys = [key(), key()]
    token = make_fernet_token(keys[1:], AUDIT)
    assert "=" not in token
    assert audit_id_from_token(token, keys) == keystone_audit_id(AUDIT)
    assert "=" not in keystone_audit_id(AUDIT)


def test_audit_id_as_str_from_old_msgpack() -> None:
    payload = msgpack.packb([0, "u1", 1, "p1", 1.0, ["YXVkaXQ"]], use_bin_type=False)
    assert audit_id_from_payload(payload) == "YXVkaXQ"


def test_audit_id_packed_as_raw_non_utf8_string() -> None:
    # Old msgpack packed bytes as the raw string type; raw=False cannot decode them as UTF-8.
    payload = msgpack.packb([0, b"\xff\xfe", 1, "p", 1.0, [AUDIT]], use_bin_type=False)
    assert audit_id_from_payload(payload) == keystone_audit_id(AUDIT)


@pytest.mark.parametrize(
    "payload",
    [
        msgpack.packb([]),
        msgpack.packb({"a": 1}),
        msgpack.packb([0, "u", 1, "p", 1.0, []]),
        msgpack.packb([0, "u", 1, "p", 1.0, "not-a-list"]),
        msgpack.packb([0, "u", 1, "p", 1.0, [b""]]),
        msgpack.packb([0, "u", 1, "p", 1.0, [42]]),
        b"\xc1",
    ],
)
def test_payload_without_audit_id(payload: bytes) -> None:
    with pytest.raises(AuditIdError):
        audit_id_from_payload(payload)


@pytest.mark.parametrize(
    ("token", "keys"),
    [
        ("not-a-token", [Fernet.generate_key().decode()]),
        (make_fernet_token([Fernet.generate_key().decode()], AUDIT), [key()]),
        ("gAAAA", ["short-key"]),
        ("tökén", [Fernet.generate_key().decode()]),
    ],
)
def test_undecryptable_tokens(token: str, keys: list[str]) -> None:
    with pytest.raises(AuditIdError):
        audit_id_from_token(token, keys)


def test_parse_fernet_repo() -> None:
    assert parse_fernet_repo([{"id": 0, "key": "k0"}, {"id": 1, "key": "k1"}]) == ["k0", "k1"]
    assert parse_fernet_repo({"keys": [{"id": 0, "key": "k0"}]}) == ["k0"]
    bad: object
    for bad in ([], {}, "x", [{"id": 0}]):
        with pytest.raises(AuditIdError):
            parse_fernet_repo(bad)


class ScriptedKeys:
    """A key source that returns stale keys from its cache and fresh ones on refresh."""

    def __init__(self, cached: Sequence[str], fresh: Sequence[str]) -> None:
        self.cached, self.fresh = list(cached), list(fresh)
        self.calls: list[bool] = []

    async def get_keys(self, *, refresh: bool = False) -> Sequence[str]:
        self.calls.append(refresh)
        return self.fresh if refresh else self.cached


async def test_extract_refetches_once_after_rotation() -> None:
    new = key()
    source = ScriptedKeys(cached=[key()], fresh=[new])
    token = make_fernet_token([new], AUDIT)
    assert await extract_audit_id(token, source) == keystone_audit_id(AUDIT)
    assert source.calls == [False, True]


async def test_extract_gives_none_when_nothing_decrypts(caplog: pytest.LogCaptureFixture) -> None:
    source = ScriptedKeys(cached=[key()], fresh=[key()])
    token = make_fernet_token([key()], AUDIT)
    assert await extract_audit_id(token, source) is None
    assert source.calls == [False, True]
    assert token not in caplog.text


async def test_sysinv_keys_are_cached_briefly(
    master: FakeMaster, master_url: str, side_client: httpx.AsyncClient
) -> None:
    # Real sockets, so no autojump clock (it would fire the HTTP timeouts): inject a clock.
    now = [0.0]
    source = service_fernet_keys(master_url, side_client, ttl=60, clock=lambda: now[0])
    assert await source.get_keys() == master.fernet_keys
    now[0] = 59.0
    await source.get_keys()
    assert master.key_fetches == 1
    now[0] = 60.0
    await source.get_keys()
    assert master.key_fetches == 2
    await source.get_keys(refresh=True)
    assert master.key_fetches == 3
    [fetch] = [s for s in master.seen if s.path == "/v1/fernet_repo"][:1]
    assert fetch.header("x-auth-token") == SERVICE_TOKEN


class FailingKeys:
    """A key source whose master sysinv cannot be asked."""

    async def get_keys(self, *, refresh: bool = False) -> Sequence[str]:
        raise FernetKeysUnavailable("GET https://sysinv/v1/fernet_repo: 403")


async def test_extract_gives_none_when_the_keys_are_unavailable(
    caplog: pytest.LogCaptureFixture,
) -> None:
    token = make_fernet_token([key()], AUDIT)
    assert await extract_audit_id(token, FailingKeys()) is None
    assert "fernet_repo: 403" in caplog.text
    assert token not in caplog.text


def test_keystone_style_padding_is_restored() -> None:
    keys = [key()]
    token = make_fernet_token(keys, b"\x00" * 16)
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    assert raw[0] == 0x80  # a fernet token version byte
    assert audit_id_from_token(token, keys) == "AAAAAAAAAAAAAAAAAAAAAA"
