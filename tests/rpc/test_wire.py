"""The oslo wire codec against messages the real oslo.messaging 18.3.1 sent (tests/rpc/fixtures,
recorded by tests/rpc/capture_oslo.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from dcorch.rpc.contract import RpcFailure
from dcorch.rpc.server import message_properties
from dcorch.rpc.wire import (
    NO_SUCH_METHOD_CLASS,
    NO_SUCH_METHOD_MODULE,
    Failure,
    MalformedMessage,
    decode_reply,
    decode_request,
    encode_reply,
    encode_request,
)

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def fixture(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    return data


def inner(body: str | bytes) -> dict[str, Any]:
    outer = json.loads(body)
    assert list(outer) == ["oslo.version", "oslo.message"]
    assert outer["oslo.version"] == "2.0"
    message: dict[str, Any] = json.loads(outer["oslo.message"])
    return message


def test_a_real_call_decodes_with_its_context_and_reply_queue() -> None:
    captured = fixture("client-call")
    request = decode_request(captured["body"])
    raw = inner(captured["body"])
    assert request.method == "echo"
    assert request.args == {"subcloud_name": "subcloud1", "sw_version": "24.09"}
    assert request.ctxt == {
        "user": "dcmanager",
        "project": "admin",
        "is_admin": True,
        "request_id": "req-1",
    }
    assert request.is_call
    assert request.msg_id == raw["_msg_id"]
    assert request.reply_q == raw["_reply_q"]
    assert str(request.reply_q).startswith("reply_")
    assert request.unique_id == raw["_unique_id"]
    assert request.timeout is None
    assert request.version is None
    # what the client's call asks of the broker: its timeout as the message's TTL
    assert captured["properties"]["expiration"] == "7000"


def test_a_versioned_monitored_call_and_the_casts_decode() -> None:
    versioned = decode_request(fixture("client-call-versioned")["body"])
    assert (versioned.version, versioned.timeout) == ("1.0", 5.0)
    for name, args in (
        ("client-cast", {"subcloud_name": "subcloud1", "count": 3}),
        ("client-cast-server", {"x": 1}),
        ("client-cast-fanout", {"x": 2}),
    ):
        cast = decode_request(fixture(name)["body"])
        assert (cast.method, cast.args, cast.is_call, cast.msg_id) == ("record", args, False, None)
        assert cast.unique_id
    assert fixture("client-cast-fanout")["exchange"].endswith("_fanout")
    assert fixture("client-cast-server")["routing_key"].endswith(".host-a")


def test_our_cast_has_the_fields_of_a_real_one_in_its_order() -> None:
    real = inner(fixture("client-call-versioned")["body"])
    ours = inner(
        encode_request(
            "record", {"x": 1}, ctxt={"user": "dcorch", "request_id": "r"}, version="1.0"
        )
    )
    call_only = {"_msg_id", "_reply_q", "_timeout"}
    real_cast_keys = [k for k in real if k not in call_only and not k.startswith("_context_")]
    assert [k for k in ours if not k.startswith("_context_")] == real_cast_keys
    assert ours["_context_user"] == "dcorch"
    assert ours["_context_request_id"] == "r"
    assert decode_request(json.dumps(json.loads(encode_request("m", {}))).encode()).method == "m"


def test_our_reply_is_shaped_like_the_real_servers() -> None:
    real = inner(fixture("server-reply")["body"])
    ours = inner(encode_reply("abc", {"k": [1, 2]}))
    assert list(ours) == list(real) == ["result", "failure", "ending", "_msg_id", "_unique_id"]
    assert ours["result"] == {"k": [1, 2]}
    assert ours["failure"] is None
    assert ours["ending"] is True
    assert ours["_msg_id"] == "abc"
    assert ours["_unique_id"] != real["_unique_id"]
    none = inner(fixture("server-reply-none")["body"])
    assert inner(encode_reply("abc"))["result"] is none["result"] is None
    decoded = decode_reply(fixture("server-reply")["body"])
    assert decoded.ending
    assert decoded.failure is None
    assert decoded.result["kwargs"] == {"a": 1}
    # a slow call to a monitored client (_timeout set) is still answered by one message
    assert decode_reply(fixture("server-reply-monitored")["body"]).result == "done"


def test_our_failure_is_shaped_like_the_real_servers_without_its_traceback() -> None:
    real = json.loads(inner(fixture("server-failure")["body"])["failure"])
    assert (real["class"], real["module"], real["message"]) == (
        "ValueError",
        "builtins",
        "the value is bad",
    )
    ours_text = inner(encode_reply("id", failure=Failure("ValueError", "builtins", "bad")))
    ours = json.loads(ours_text["failure"])
    assert list(ours) == list(real) == ["class", "module", "message", "tb", "args", "kwargs"]
    assert ours["tb"] == []
    assert ours["args"] == ["bad"]
    assert ours_text["result"] is None
    failure = Failure.from_rpc_failure(
        RpcFailure("SubcloudNotFound", "dcorch.common.exceptions", "no", kwargs={"name": "s"})
    )
    assert json.loads(failure.to_json())["kwargs"] == {"name": "s"}


def test_unknown_method_and_bad_arguments_fail_as_the_real_server() -> None:
    unknown = decode_reply(fixture("server-no-such-method")["body"]).failure
    assert unknown is not None
    assert (unknown["class"], unknown["module"]) == (NO_SUCH_METHOD_CLASS, NO_SUCH_METHOD_MODULE)
    assert unknown["message"] == "Endpoint does not support RPC method nosuch"
    bad = decode_reply(fixture("server-bad-arguments")["body"]).failure
    assert bad is not None
    assert bad["module"] == "builtins"


def test_internal_failures_keep_the_class_not_the_text() -> None:
    failure = Failure.internal(KeyError("password=secret"), "add_subcloud", "inc123")
    assert (failure.exc_class, failure.exc_module) == ("KeyError", "builtins")
    assert "secret" not in failure.message
    assert "inc123" in failure.message


def test_our_properties_are_the_real_ones() -> None:
    ours = message_properties()
    for name in ("client-cast", "server-reply"):
        real = fixture(name)["properties"]
        assert {
            "content_type": ours.content_type,
            "content_encoding": ours.content_encoding,
            "delivery_mode": ours.delivery_mode,
            "priority": ours.priority,
            "headers": ours.headers,
        } == real


def test_an_unenveloped_message_is_accepted_as_oslo_does() -> None:
    request = decode_request(json.dumps({"method": "m", "args": {"a": 1}, "_unique_id": "u"}))
    assert (request.method, request.args, request.unique_id) == ("m", {"a": 1}, "u")


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"\xff not json", "body is not JSON"),
        (b"[1, 2]", "body is a JSON list, not an object"),
        (json.dumps({"oslo.version": "3.0", "oslo.message": "{}"}), "unsupported oslo.version"),
        (json.dumps({"oslo.version": "2.0", "oslo.message": "{"}), "oslo.message is not JSON"),
        (json.dumps({"oslo.version": "2.0", "oslo.message": 5}), "not a JSON string"),
        (json.dumps({"args": {}}), "no method"),
        (json.dumps({"method": "m", "args": [1]}), "args of m is a JSON list, not an object"),
        (json.dumps({"method": "m", "_msg_id": "x"}), "_msg_id and _reply_q come together"),
        (json.dumps({"method": "m", "_unique_id": 5}), "_unique_id must be a non-empty string"),
    ],
)
def test_malformed_requests_say_why(body: str | bytes, why: str) -> None:
    with pytest.raises(MalformedMessage, match=why):
        decode_request(body)
