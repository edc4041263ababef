"""Token validation and its cache (virtual time: the autojump clock)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest
import trio

from dcorch.proxy.auth import (
    DEFAULT_MAX_ENTRIES,
    KeystoneTokenValidator,
    TokenCache,
    TokenInfo,
    parse_token_body,
)
from dcorch.proxy.errors import ValidationUnavailable
from tests.proxy.fakes import ADMIN_TOKEN, MEMBER_TOKEN, Canned, FakeMaster, token_body

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


class CountingValidator:
    def __init__(self, info: TokenInfo | None) -> None:
        self.info = info
        self.calls: list[str] = []

    async def validate(self, token: str) -> TokenInfo | None:
        self.calls.append(token)
        return self.info


def admin(expires_in: float | None = 3600) -> TokenInfo:
    expires = None if expires_in is None else NOW + timedelta(seconds=expires_in)
    return TokenInfo(roles=frozenset({"admin"}), expires_at=expires)


def cache(
    inner: CountingValidator, ttl: float = 30.0, max_entries: int = DEFAULT_MAX_ENTRIES
) -> TokenCache:
    return TokenCache(inner, ttl=ttl, max_entries=max_entries, wall_clock=lambda: NOW)


async def test_cache_hit_within_ttl_and_refetch_after(autojump_clock: trio.abc.Clock) -> None:
    inner = CountingValidator(admin())
    tokens = cache(inner)
    start = trio.current_time()
    assert await tokens.validate("t") == admin()
    await trio.sleep(29.999)
    assert await tokens.validate("t") == admin()
    assert len(inner.calls) == 1
    await trio.sleep(0.001)
    assert trio.current_time() - start == pytest.approx(30.0)
    await tokens.validate("t")
    assert len(inner.calls) == 2


async def test_cache_respects_the_token_expiry(autojump_clock: trio.abc.Clock) -> None:
    inner = CountingValidator(admin(expires_in=5))
    tokens = cache(inner)
    await tokens.validate("t")
    await trio.sleep(4.9)
    await tokens.validate("t")
    assert len(inner.calls) == 1
    await trio.sleep(0.1)
    await tokens.validate("t")
    assert len(inner.calls) == 2


async def test_expired_or_expiryless_tokens(autojump_clock: trio.abc.Clock) -> None:
    expired = CountingValidator(admin(expires_in=-1))
    tokens = cache(expired)
    await tokens.validate("t")
    await tokens.validate("t")
    assert len(expired.calls) == 2  # never cached
    forever = CountingValidator(admin(expires_in=None))
    tokens = cache(forever)
    await tokens.validate("t")
    await tokens.validate("t")
    assert len(forever.calls) == 1  # ttl only


async def test_invalid_tokens_are_not_cached() -> None:
    inner = CountingValidator(None)
    tokens = cache(inner)
    assert await tokens.validate("bad") is None
    assert await tokens.validate("bad") is None
    assert len(inner.calls) == 2
    assert len(tokens) == 0


async def test_forget_drops_a_token() -> None:
    inner = CountingValidator(admin())
    tokens = cache(inner)
    await tokens.validate("t")
    tokens.forget("t")
    tokens.forget("never-seen")
    await tokens.validate("t")
    assert len(inner.calls) == 2


async def test_cache_is_bounded_and_evicts_least_recently_used() -> None:
    inner = CountingValidator(admin())
    tokens = cache(inner, max_entries=2)
    for token in ("a", "b", "a", "c"):  # "b" is the least recently used when "c" arrives
        await tokens.validate(token)
    assert len(tokens) == 2
    inner.calls.clear()
    await tokens.validate("a")
    await tokens.validate("c")
    assert inner.calls == []
    await tokens.validate("b")
    assert inner.calls == ["b"]


async def test_cache_keys_are_hashes_not_tokens() -> None:
    tokens = cache(CountingValidator(admin()))
    await tokens.validate("secret-token")
    assert all(isinstance(k, bytes) and b"secret" not in k for k in tokens._entries)


def test_parse_token_body() -> None:
    info = parse_token_body(token_body(["Admin", "member"], "2030-01-01T00:00:00.000000Z"))
    assert info.roles == frozenset({"admin", "member"})
    assert info.expires_at == datetime(2030, 1, 1, tzinfo=UTC)
    assert (info.user_id, info.project_id) == ("u-admin", "p-admin")
    naive = parse_token_body({"token": {"expires_at": "2030-01-01T00:00:00", "roles": []}})
    assert naive.expires_at == datetime(2030, 1, 1, tzinfo=UTC)
    assert naive.roles == frozenset()


@pytest.mark.parametrize(
    "body", [{}, [], {"token": "x"}, {"token": {"expires_at": "yesterday", "roles": []}}]
)
def test_parse_token_body_rejects_non_tokens(body: object) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - any ValueError means "not a token"
        parse_token_body(body)


async def test_keystone_validator(
    master: FakeMaster, master_url: str, side_client: httpx.AsyncClient
) -> None:
    validator = KeystoneTokenValidator(master_url + "/", side_client)
    info = await validator.validate(ADMIN_TOKEN)
    assert info is not None
    assert info.roles == frozenset({"admin", "member"})
    member = await validator.validate(MEMBER_TOKEN)
    assert member is not None
    assert member.roles == frozenset({"member"})
    assert await validator.validate("nope") is None


async def test_keystone_validator_unavailable(
    master: FakeMaster, master_url: str, side_client: httpx.AsyncClient
) -> None:
    master.responses[("GET", "/v3/auth/tokens")] = Canned(500, b"boom")
    validator = KeystoneTokenValidator(master_url, side_client)
    with pytest.raises(ValidationUnavailable, match="500"):
        await validator.validate(ADMIN_TOKEN)
    master.responses[("GET", "/v3/auth/tokens")] = Canned(200, b"not json")
    with pytest.raises(ValidationUnavailable, match="unreadable"):
        await validator.validate(ADMIN_TOKEN)
    unreachable = KeystoneTokenValidator("http://127.0.0.1:9", side_client)
    with pytest.raises(ValidationUnavailable):
        await unreachable.validate(ADMIN_TOKEN)
