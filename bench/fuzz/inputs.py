"""What the fuzzer sends: hypothesis strategies for every surface, as plain values.

An input is data (:class:`HttpInput`, :class:`RawInput`), never a callable, so a failure prints
as what was sent. What only the running system knows is left as a placeholder the system fills
in when it sends (:meth:`bench.fuzz.system.FuzzSystem.resolve`): ``{user:3}`` is the fourth user
this run created through that surface (a random id if none yet), ``{subcloud:1}`` a registered
subcloud, ``{token}`` a token issued during the run. Ids the run did not create are never
targeted, so the admin the fuzzer works as cannot be disabled, renamed or revoked by an input.

User passwords are drawn from :data:`SECRET_PATTERN` (``FzPw-<hex>``), so the log scan can
find any of them without a list; they are only ever placed where a secret belongs (a password or
passphrase field, never a path), so seeing one in a log line is a leak, not an echo of a URL.
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import quote

from hypothesis import strategies as st

from dcorch.dbsync.contract import KIND_TABLES, NULL_DOMAIN, ColumnSpec, TableSpec
from dcorch.sim.certs import make_test_pem
from dcorch.sim.keystone_tables import KEYSTONE_SPECS

SECRET_PATTERN: Final = re.compile(r"FzPw-[0-9a-f]{12}")
"""Every user password and passphrase an input carries matches this."""
CAP_BYTES: Final = 64 * 1024
"""The body cap the fuzzed system runs with (proxy and DB-sync agent): oversized inputs exceed it
without costing megabytes each."""
QUART_CAP_BYTES: Final = 16 * 1024 * 1024
"""quart's default request size limit, which the v1 API keeps."""
DEFAULT_DOMAIN: Final = "default"

Json = Any


@dataclass(frozen=True, slots=True)
class HttpInput:
    """One well-framed HTTP request (sent with httpx)."""

    surface: str
    target: str
    """``api``, ``identity``, ``platform``, ``dbsync-sim`` or ``dbsync-agent``: whose base URL
    ``path`` follows."""
    method: str
    path: str
    body: bytes = b""
    content_type: str | None = "application/json"
    headers: tuple[tuple[str, str], ...] = ()
    auth: str = "admin"
    """``admin`` (the run's admin token), ``none``, ``bogus`` or ``issued`` (a token the run got
    from keystone, else the admin's)."""

    def describe(self) -> str:
        shown = self.body[:160] + (b"..." if len(self.body) > 160 else b"")
        return f"{self.surface}: {self.method} {self.target}{self.path[:200]} body={shown!r}"


@dataclass(frozen=True, slots=True)
class RawInput:
    """Bytes written to a socket as they are: broken framing httpx would refuse to send.

    ``TOKEN`` in the bytes is replaced by the admin token, ``HOST`` by the listener's address.
    """

    surface: str
    target: str
    data: bytes
    half_close: bool = True
    """Shut the write side after sending: the server sees the end of a truncated body."""
    kind: str = ""

    def describe(self) -> str:
        shown = self.data[:200] + (b"..." if len(self.data) > 200 else b"")
        return f"{self.surface}[{self.kind}]: {self.target} {shown!r}"


Input = HttpInput | RawInput


# -- values --------------------------------------------------------------------------------------

secrets = st.text(alphabet="0123456789abcdef", min_size=12, max_size=12).map(lambda h: f"FzPw-{h}")
"""A user password, passphrase or password hash: :data:`SECRET_PATTERN`."""

WEIRD_TEXT: Final = (
    "",
    " ",
    "\x00",
    "a\x00b",
    "\x00" * 8,
    "\ud800",
    "x\udfffy",
    "\u202e\u0645\u0631\u062d\u0628\u0627",
    "\U0001f600" * 8,
    "\ufeff",
    "..",
    "../../etc/passwd",
    "%00",
    "%2F",
    "a/b",
    "a\nb",
    "a\r\nX-Injected: 1",
    "<script>",
    "'; DROP TABLE user; --",
    "\\",
    "null",
    "\u0130\u0131\u00df",
    "e\u0301",
    "\u3042" * 100,
    "x" * 255,
    "x" * 256,
    "x" * 4096,
)
"""Strings that break naive code: NUL, lone surrogates, bidi and combining marks, path tricks,
header injection, SQL, sizes at and over keystone's column lengths."""

texts = st.one_of(
    st.text(max_size=24),
    st.text(st.characters(codec="utf-8"), min_size=1, max_size=80),
    st.sampled_from(WEIRD_TEXT),
)
names = st.one_of(
    st.text(string.ascii_letters + string.digits + "-_", min_size=1, max_size=20).map(
        lambda s: f"fz-{s}"
    ),
    texts,
)
"""Object names: mostly plausible (so creates succeed and the change is synced), often not."""

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=2**63 - 2, max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    texts,
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=12,
)
header_values = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40
).map(str.strip)
"""Printable ASCII without surrounding blanks: httpx refuses to send anything else (the raw
surface sends the rest)."""


def _paths(value: Json, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*prefix, index))
    return found


def _replace(value: Json, path: tuple[Any, ...], new: Callable[[Json], Json]) -> Json:
    if not path:
        return new(value)
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        copy = dict(value)
        copy[head] = _replace(value[head], rest, new)
        return copy
    items = list(value)
    items[head] = _replace(value[head], rest, new)
    return items


_DELETE = object()


def _drop(value: Json, path: tuple[Any, ...]) -> Json:
    parent, key = path[:-1], path[-1]

    def without(container: Json) -> Json:
        if isinstance(container, dict):
            return {k: v for k, v in container.items() if k != key}
        return [v for i, v in enumerate(container) if i != key]

    return _replace(value, parent, without)


def _constant(new: Json) -> Callable[[Json], Json]:
    return lambda _old: new


def _under(plural: str) -> Callable[[str], str]:
    return lambda oid: f"/v3/{plural}/{oid}"


@st.composite
def mutated(draw: st.DrawFn, base: st.SearchStrategy[Json], most: int = 3) -> Json:
    """A valid value with up to ``most`` random edits: a subtree replaced, dropped or grown."""
    value = draw(base)
    for _ in range(draw(st.integers(0, most))):
        path = draw(st.sampled_from(_paths(value)))
        action = draw(st.sampled_from(["replace", "drop", "add", "weird"]))
        if action == "drop" and path:
            value = _drop(value, path)
        elif action == "add":
            key, extra = draw(texts), draw(json_values)

            def grow(node: Json, key: str = key, extra: Json = extra) -> Json:
                if isinstance(node, dict):
                    return {**node, key: extra}
                if isinstance(node, list):
                    return [*node, extra]
                return [node, extra]

            value = _replace(value, path, grow)
        else:
            new = draw(json_values if action == "replace" else st.sampled_from(WEIRD_TEXT))
            value = _replace(value, path, _constant(new))
    return value


# -- bodies --------------------------------------------------------------------------------------

DEEP_NESTING: Final = 5_000
"""Nesting that overflows a recursive JSON parser (Python's raises RecursionError past about
1000), in bodies well under the caps."""


def encoded(values: st.SearchStrategy[Json], *, cap: int = CAP_BYTES) -> st.SearchStrategy[bytes]:
    """Bodies made from ``values``: JSON (ASCII or raw UTF-8), truncated, padded, deep, huge,
    binary, empty."""

    def dump(value: Json, ascii_only: bool) -> bytes:
        text = json.dumps(value, ensure_ascii=ascii_only)
        return text.encode("utf-8", "surrogatepass")

    plain = st.builds(dump, values, st.booleans())
    return st.one_of(
        plain,
        plain,
        plain,
        st.tuples(plain, st.integers(0, 200)).map(lambda p: p[0][: p[1]]),
        st.tuples(plain, st.binary(min_size=1, max_size=16)).map(lambda p: p[0] + p[1]),
        st.sampled_from(
            [
                b"[" * DEEP_NESTING + b"]" * DEEP_NESTING,
                b'{"a":' * DEEP_NESTING + b"1" + b"}" * DEEP_NESTING,
                b"\xff\xfe\x00\x00",
                b"\xef\xbb\xbf{}",
                b"{}" * 3,
                b"NaN",
                b'{"a": Infinity}',
                b'{"a": 1e999999}',
                b'{"a": -0}',
                b'{"a": 1, "a": 2}',
                b"\x00",
                b"",
            ]
        ),
        st.integers(cap + 1, cap + 4096).map(lambda n: b'{"x": "' + b"a" * n + b'"}'),
        st.binary(max_size=200),
    )


content_types = st.sampled_from(
    [
        "application/json",
        "application/json",
        "application/json; charset=utf-8",
        "application/json; charset=latin-1",
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=zz",
        "application/octet-stream",
        "",
        "*/*",
        "application/x-evil; a=b; c",
    ]
)


# -- ids in paths --------------------------------------------------------------------------------


def literal_ids() -> st.SearchStrategy[str]:
    """An id nobody created, percent-encoded for a path (NUL, unicode, huge, empty)."""
    return st.one_of(
        st.text("0123456789abcdef", min_size=32, max_size=32),
        texts.map(lambda s: quote(s.encode("utf-8", "surrogatepass"), safe="")),
        st.sampled_from(["%00", "%FF%FE", "%", "%zz", "x" * 300, ";", "..", "%2e%2e"]),
    )


def id_ref(kind: str) -> st.SearchStrategy[str]:
    """A placeholder for an id this run created (resolved when sent) or a literal one."""
    return st.one_of(
        st.integers(0, 1000).map(lambda i: f"{{{kind}:{i}}}"),
        st.integers(0, 1000).map(lambda i: f"{{{kind}:{i}}}"),
        literal_ids(),
    )


# -- the v1 API ----------------------------------------------------------------------------------

ips = st.one_of(
    st.ip_addresses().map(str),
    st.sampled_from(["fe80::1%eth0", "1.2.3", "256.1.1.1", "::ffff:1.2.3.4", "", "x" * 100]),
)
urls = st.one_of(
    st.sampled_from(
        [
            "http://10.0.0.1:5000/v3",
            "https://[fd00::1]:6385",
            "ftp://x",
            "http://",
            "http://a b",
            "http://x/" + "p" * 400,
            "javascript:alert(1)",
        ]
    ),
    texts,
)
api_add = st.fixed_dictionaries(
    {"subcloud": names},
    optional={
        "management_ip": ips,
        "software_version": st.one_of(st.just("24.09"), texts),
        "endpoint_types": st.lists(st.sampled_from(["identity", "platform", "x"]), max_size=3),
        "endpoints": st.dictionaries(st.sampled_from(["keystone", "sysinv", "dcdbsync"]), urls),
    },
)
api_update = st.fixed_dictionaries(
    {},
    optional={
        "management_state": st.sampled_from(["managed", "unmanaged", "x"]),
        "availability_status": st.sampled_from(["online", "offline", ""]),
        "software_version": st.one_of(st.just("24.09"), texts),
        "management_ip": ips,
        "endpoints": st.dictionaries(st.sampled_from(["keystone", "sysinv", "dcdbsync"]), urls),
        "password": secrets,
    },
)
api_paths = st.one_of(
    st.sampled_from(["", "/", "/{subcloud:0}", "/{subcloud:1}/initial-sync"]),
    st.sampled_from(["/{subcloud:0}/sync-status", "/{subcloud:1}/orch-requests?state=x"]),
    literal_ids().map(lambda s: f"/{s}"),
    literal_ids().map(lambda s: f"/{s}/initial-sync"),
)


@st.composite
def api_inputs(draw: st.DrawFn) -> HttpInput:
    """A hand-written v1 API request: add/update/initial-sync bodies, mutated and mis-framed."""
    method = draw(st.sampled_from(["POST", "PUT", "PUT", "DELETE", "GET", "PATCH"]))
    path = draw(api_paths)
    valid = st.one_of(api_add, api_update, st.just({"initial_sync_state": "requested"}))
    body = draw(encoded(mutated(valid)))
    project = draw(st.sampled_from(["admin", "{project}", "x", "%00", "\u3042"]))
    return HttpInput(
        surface="api",
        target="api",
        method=method,
        path=f"/v1.0/{quote(project, safe='{}')}/subclouds{path}",
        body=body,
        content_type=draw(content_types),
        auth=draw(st.sampled_from(["admin"] * 8 + ["none", "bogus"])),
    )


# -- the identity proxy (keystone v3) ------------------------------------------------------------


def _keystone_object(kind: str) -> st.SearchStrategy[Json]:
    base: dict[str, st.SearchStrategy[Json]] = {"name": names}
    optional: dict[str, st.SearchStrategy[Json]] = {
        "description": texts,
        "enabled": st.one_of(st.booleans(), json_scalars),
        "domain_id": st.sampled_from([DEFAULT_DOMAIN, "nope", "\x00"]),
    }
    if kind == "user":
        optional |= {"password": secrets, "default_project_id": id_ref("project"), "email": texts}
    if kind == "project":
        optional |= {"parent_id": id_ref("project"), "is_domain": st.booleans()}
    return st.fixed_dictionaries({kind: st.fixed_dictionaries(base, optional=optional)})


def _auth_body(admin_user: str) -> st.SearchStrategy[Json]:
    """Password authentication as the admin (the run's real password), or a user the run made."""

    def body(user: str, password: str, scoped: bool) -> Json:
        auth: dict[str, Any] = {
            "identity": {
                "methods": ["password"],
                "password": {
                    "user": {"name": user, "domain": {"id": "default"}, "password": password}
                },
            }
        }
        if scoped:
            auth["scope"] = {"project": {"name": "admin", "domain": {"id": "default"}}}
        return {"auth": auth}

    users = st.one_of(st.just(admin_user), names)
    return st.builds(body, users, st.one_of(st.just("{admin_password}"), secrets), st.booleans())


def identity_routes(admin_user: str) -> st.SearchStrategy[tuple[str, str, Json]]:
    """``(method, path, valid body)`` over the intercepted keystone routes and their neighbours."""
    u, g, p, r = (id_ref(k) for k in ("user", "group", "project", "role"))
    none: st.SearchStrategy[Json] = st.just(None)
    routes: list[st.SearchStrategy[tuple[str, str, Json]]] = []
    for kind, plural in (("user", "users"), ("group", "groups"), ("project", "projects")):
        obj = _keystone_object(kind)
        ref = id_ref(kind)
        routes += [
            st.tuples(st.just("POST"), st.just(f"/v3/{plural}"), obj),
            st.tuples(st.just("PATCH"), ref.map(_under(plural)), obj),
            st.tuples(st.just("DELETE"), ref.map(_under(plural)), none),
            st.tuples(st.just("GET"), ref.map(_under(plural)), none),
        ]
    role = st.fixed_dictionaries({"role": st.fixed_dictionaries({"name": names})})
    password = st.fixed_dictionaries(
        {"user": st.fixed_dictionaries({"password": secrets, "original_password": secrets})}
    )
    routes += [
        st.tuples(st.just("POST"), st.just("/v3/roles"), role),
        st.tuples(st.just("PATCH"), r.map(lambda i: f"/v3/roles/{i}"), role),
        st.tuples(st.just("DELETE"), r.map(lambda i: f"/v3/roles/{i}"), none),
        st.tuples(st.just("POST"), u.map(lambda i: f"/v3/users/{i}/password"), password),
        st.tuples(
            st.sampled_from(["PUT", "DELETE", "HEAD"]),
            st.tuples(g, u).map(lambda t: f"/v3/groups/{t[0]}/users/{t[1]}"),
            none,
        ),
        st.tuples(
            st.sampled_from(["PUT", "DELETE"]),
            st.tuples(p, st.sampled_from(["users", "groups"]), st.one_of(u, g), r).map(
                lambda t: f"/v3/projects/{t[0]}/{t[1]}/{t[2]}/roles/{t[3]}"
            ),
            none,
        ),
        st.tuples(st.just("POST"), st.just("/v3/auth/tokens"), _auth_body(admin_user)),
        st.tuples(st.sampled_from(["DELETE", "GET"]), st.just("/v3/auth/tokens"), none),
        st.tuples(
            st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]),
            st.text("abcdefghijklmnopqrstuvwxyz0123456789/._-%?=&", max_size=40).map(
                lambda s: "/" + s
            ),
            json_values,
        ),
    ]
    return st.one_of(routes)


@st.composite
def identity_inputs(draw: st.DrawFn, admin_user: str = "admin") -> HttpInput:
    """A keystone request through the identity proxy: valid-shaped, mutated, mis-framed."""
    method, path, valid = draw(identity_routes(admin_user))
    if valid is None and draw(st.booleans()):
        body = b""
    else:
        body = draw(encoded(mutated(st.just(valid), most=2)))
    headers: dict[str, str] = {}
    if path == "/v3/auth/tokens" and method != "POST":
        headers["X-Subject-Token"] = draw(st.sampled_from(["{token}", "{token}", "bogus", ""]))
    extra = draw(
        st.dictionaries(
            st.sampled_from(["User-Agent", "Accept", "X-Foo", "Accept-Encoding", "Expect"]),
            header_values,
            max_size=2,
        )
    )
    return HttpInput(
        surface="identity",
        target="identity",
        method=method,
        path=path,
        body=body,
        content_type=draw(content_types),
        headers=tuple({**extra, **headers}.items()),
        auth=draw(st.sampled_from(["admin"] * 8 + ["none", "bogus", "issued"])),
    )


# -- the platform proxy (sysinv v1): certificates and the sysadmin iuser -------------------------

CERT_MODES: Final = ("ssl", "ssl_ca", "docker_registry", "openstack", "openstack_ca", "x", "")


@dataclass(frozen=True, slots=True)
class Part:
    name: str
    data: bytes
    filename: str | None = None
    headers: bytes = b""


@st.composite
def multipart_bodies(draw: st.DrawFn) -> tuple[bytes, str]:
    """``(body, content type)`` of a certificate upload, often with its framing broken."""
    cn = draw(st.text(string.ascii_lowercase, min_size=1, max_size=8))
    pem = make_test_pem(f"fz-{cn}").encode()
    file_data = draw(
        st.one_of(
            st.just(pem),
            st.just(pem * 2),
            st.binary(max_size=64),
            st.just(pem[: len(pem) // 2]),
            st.just(b"-----BEGIN CERTIFICATE-----\n\x00\xff\n-----END CERTIFICATE-----\n"),
        )
    )
    parts = [
        Part(
            "file", file_data, filename=draw(st.sampled_from(["c.pem", "\u00e9.pem", "", "\x00"]))
        ),
        Part("mode", draw(st.sampled_from(CERT_MODES)).encode()),
        Part("passphrase", draw(secrets).encode()),
    ]
    parts = draw(st.permutations(parts))
    boundary = draw(
        st.one_of(
            st.text(string.ascii_letters + string.digits, min_size=1, max_size=30),
            st.sampled_from(["", "a" * 200, "--", "a b", '"q"', "\u00e9", "x;y"]),
        )
    )
    newline = draw(st.sampled_from([b"\r\n", b"\r\n", b"\n"]))
    chunks = []
    for part in parts:
        disposition = f'form-data; name="{part.name}"'
        if part.filename is not None:
            disposition += f'; filename="{part.filename}"'
        head = f"Content-Disposition: {disposition}".encode("utf-8", "surrogatepass")
        chunks.append(
            b"--"
            + boundary.encode("utf-8", "surrogatepass")
            + newline
            + head
            + newline
            + part.headers
            + newline
            + part.data
            + newline
        )
    body = b"".join(chunks) + b"--" + boundary.encode("utf-8", "surrogatepass") + b"--" + newline
    breakage = draw(
        st.sampled_from(
            [
                "none",
                "none",
                "none",
                "other-boundary",
                "no-boundary",
                "no-close",
                "truncate",
                "junk",
            ]
        )
    )
    declared = boundary
    if breakage == "other-boundary":
        declared = boundary + "x"
    elif breakage == "no-close":
        body = body[: body.rfind(b"--" + boundary.encode("utf-8", "surrogatepass") + b"--")]
    elif breakage == "truncate":
        body = body[: draw(st.integers(0, max(0, len(body) - 1)))]
    elif breakage == "junk":
        body = draw(st.binary(min_size=1, max_size=32)) + body
    content_type = draw(
        st.sampled_from(
            [
                f"multipart/form-data; boundary={declared}",
                f'multipart/form-data; boundary="{declared}"',
                "multipart/form-data",
                f"multipart/mixed; boundary={declared}",
                f"application/json; boundary={declared}",
            ]
        )
    )
    if breakage == "no-boundary":
        content_type = "multipart/form-data; charset=utf-8"
    return body, content_type


iuser_payloads = st.one_of(
    st.lists(
        st.fixed_dictionaries(
            {
                "op": st.sampled_from(["replace", "add", "remove", "x"]),
                "path": st.sampled_from(["/passwd_hash", "/root_sig", "/passwd_expiry_days", "/x"]),
                "value": st.one_of(secrets, json_scalars),
            }
        ),
        max_size=3,
    ),
    st.fixed_dictionaries({"passwd_hash": secrets, "root_sig": texts}),
)


@st.composite
def platform_inputs(draw: st.DrawFn) -> HttpInput:
    """A sysinv request through the platform proxy: certificate uploads, deletes, iuser."""
    choice = draw(st.sampled_from(["install", "install", "cert", "delete", "iuser", "get", "any"]))
    content_type: str | None = "application/json"
    body = b""
    method = "GET"
    if choice == "install":
        method, path = "POST", "/v1/certificate/certificate_install"
        body, content_type = draw(multipart_bodies())
    elif choice == "cert":
        method = "POST"
        path = "/v1/certificate/" + draw(literal_ids())
        body, content_type = draw(multipart_bodies())
    elif choice == "delete":
        method = "DELETE"
        path = "/v1/certificate/" + draw(st.one_of(id_ref("certificate"), literal_ids()))
    elif choice == "iuser":
        method = draw(st.sampled_from(["PATCH", "PUT"]))
        path = "/v1/iuser/" + draw(st.one_of(st.just("{iuser}"), literal_ids()))
        body = draw(encoded(mutated(iuser_payloads, most=1)))
        content_type = draw(content_types)
    elif choice == "get":
        path = draw(st.sampled_from(["/v1", "/v1/", "/", "/v1/certificate", "/v1/iuser"]))
    else:
        method = draw(st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE"]))
        path = "/" + draw(st.text("abcdefghijklmnopqrstuvwxyz0123456789/._-%?=&", max_size=40))
        body = draw(encoded(json_values))
        content_type = draw(content_types)
    if "fernet" in path:
        path = "/v1/x"  # a new key repository would invalidate the run's own tokens
    return HttpInput(
        surface="platform",
        target="platform",
        method=method,
        path=path,
        body=body,
        content_type=content_type,
        auth=draw(st.sampled_from(["admin"] * 8 + ["none", "bogus"])),
    )


# -- raw HTTP: framing httpx will not produce ----------------------------------------------------

RAW_TARGETS: Final = ("api", "identity", "platform")
_RAW_PATHS: Final = {
    "api": (b"/v1.0/admin/subclouds", b"/v1.0/admin/subclouds/subcloud1"),
    "identity": (b"/v3/users", b"/v3/groups", b"/v3/auth/tokens"),
    "platform": (b"/v1/certificate/certificate_install", b"/v1/iuser/x"),
    "dbsync-agent": (b"/v1.0/identity/users/", b"/v1.0/identity/token-revocation-events/"),
}


@st.composite
def raw_inputs(draw: st.DrawFn, targets: Sequence[str] = RAW_TARGETS) -> RawInput:
    """Truncated and over-long bodies, broken chunking, huge or malformed headers and lines."""
    target = draw(st.sampled_from(list(targets)))
    path = draw(st.sampled_from(_RAW_PATHS[target]))
    method = draw(st.sampled_from([b"POST", b"PUT", b"PATCH", b"GET", b"DELETE"]))
    body = draw(encoded(json_values))
    kind = draw(
        st.sampled_from(
            [
                "truncated",
                "overlong",
                "bad-length",
                "chunked-broken",
                "chunked-and-length",
                "huge-header",
                "many-headers",
                "header-junk",
                "request-line",
                "http10",
            ]
        )
    )
    base = [b"Host: HOST", b"X-Auth-Token: TOKEN", b"Content-Type: application/json"]
    line = method + b" " + path + b" HTTP/1.1"
    extra: list[bytes] = []
    payload = body
    if kind == "truncated":
        extra.append(b"Content-Length: %d" % (len(body) + draw(st.integers(1, 10_000))))
    elif kind == "overlong":
        extra.append(b"Content-Length: %d" % max(0, len(body) - draw(st.integers(1, 50))))
    elif kind == "bad-length":
        extra.append(
            b"Content-Length: "
            + draw(st.sampled_from([b"-1", b"abc", b"1e3", b"99999999999999999999", b"", b"1, 2"]))
        )
    elif kind == "chunked-broken":
        extra.append(b"Transfer-Encoding: chunked")
        payload = draw(
            st.sampled_from(
                [
                    b"zz\r\n" + body + b"\r\n0\r\n\r\n",
                    b"%x\r\n" % (len(body) + 5) + body + b"\r\n0\r\n\r\n",
                    b"%x\r\n" % len(body) + body,
                    b"%x;ext=\x00\r\n" % len(body) + body + b"\r\n0\r\n\r\n",
                    b"ffffffffffffffffff\r\n" + body,
                ]
            )
        )
    elif kind == "chunked-and-length":
        extra += [b"Transfer-Encoding: chunked", b"Content-Length: %d" % len(body)]
        payload = b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n"
    elif kind == "huge-header":
        size = draw(st.sampled_from([8 * 1024, 17 * 1024, 70 * 1024, 1024 * 1024]))
        extra += [b"X-Big: " + b"a" * size, b"Content-Length: %d" % len(body)]
    elif kind == "many-headers":
        count = draw(st.sampled_from([100, 1000, 5000]))
        extra += [b"X-H%d: v" % i for i in range(count)] + [b"Content-Length: %d" % len(body)]
    elif kind == "header-junk":
        junk = draw(
            st.sampled_from(
                [
                    b"X-Nul: a\x00b",
                    b"X-Bin: \xff\xfe\x80",
                    b"No-Colon",
                    b" Leading: space",
                    b"X-Auth-Token: \xe9\xe8",
                    b"X-Auth-Token:",
                    b"Content-Type: \x7f",
                    b"X\x00: y",
                ]
            )
        )
        extra += [junk, b"Content-Length: %d" % len(body)]
    elif kind == "request-line":
        line = draw(
            st.sampled_from(
                [
                    method + b" " + path,
                    method + b" " + path + b" HTTP/9.9",
                    b"BREW " + path + b" HTTP/1.1",
                    method + b" /" + b"a" * 70_000 + b" HTTP/1.1",
                    method + b" " + path + b"\x00 HTTP/1.1",
                    method + b"  " + path + b"  HTTP/1.1",
                    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
                ]
            )
        )
        extra.append(b"Content-Length: %d" % len(body))
    else:
        line = method + b" " + path + b" HTTP/1.0"
        extra.append(b"Content-Length: %d" % len(body))
    head = b"\r\n".join([line, *base, *extra]) + b"\r\n\r\n"
    return RawInput(surface="raw", target=target, data=head + payload, kind=kind)


# -- the DB-sync contract (records checked against keystone's tables) ----------------------------

TIMES = st.datetimes().map(lambda d: d.strftime("%Y-%m-%dT%H:%M:%S.%f"))


def _column_value(column: ColumnSpec) -> st.SearchStrategy[Json]:
    if column.kind == "str":
        limit = column.max_length or 300
        valid = st.text(st.characters(codec="utf-8"), max_size=min(limit, 40))
        return st.one_of(valid, valid, st.sampled_from(WEIRD_TEXT))
    if column.kind == "int":
        top = 2**31 - 1 if column.int_bits == 32 else 2**63 - 1
        return st.one_of(st.integers(0, 10**6), st.integers(-top - 10, top + 10))
    if column.kind == "bool":
        return st.booleans()
    if column.kind == "date":
        return st.dates().map(lambda d: d.isoformat())
    return st.one_of(TIMES, TIMES, st.sampled_from(["2024-13-01T00:00:00", "yesterday", ""]))


def rows(spec: TableSpec, fixed: dict[str, st.SearchStrategy[Json]]) -> st.SearchStrategy[Json]:
    """A row of ``spec``: every required column, some optional ones, ``fixed`` ones as given."""
    required: dict[str, st.SearchStrategy[Json]] = {}
    optional: dict[str, st.SearchStrategy[Json]] = {}
    for column in spec.columns.values():
        if column.name in fixed:
            continue
        value = _column_value(column)
        if column.nullable:
            value = st.one_of(st.none(), value)
        (required if column.required else optional)[column.name] = value
    return st.fixed_dictionaries({**required, **fixed}, optional=optional)


new_ids = st.text("0123456789abcdef", min_size=32, max_size=32)


def dbsync_records(kind: str, server: str) -> st.SearchStrategy[Json]:
    """A valid-shaped record of ``kind`` (users, groups, projects, roles) for one server."""
    specs = KEYSTONE_SPECS
    ids = st.one_of(new_ids, new_ids, st.sampled_from(WEIRD_TEXT))
    domain = st.sampled_from([DEFAULT_DOMAIN, DEFAULT_DOMAIN, "nope"])
    if kind == "users":
        return st.fixed_dictionaries(
            {
                "user": rows(specs["user"], {"id": ids, "domain_id": st.just(DEFAULT_DOMAIN)}),
                "local_user": rows(specs["local_user"], {"domain_id": domain, "name": names}),
            },
            optional={
                "password": st.lists(
                    rows(specs["password"], {"password_hash": secrets}), max_size=2
                ),
                "user_option": st.lists(rows(specs["user_option"], {}), max_size=2),
            },
        )
    if kind == "groups":
        members = st.lists(id_ref(f"{server}-users"), max_size=3, unique=True)
        return st.fixed_dictionaries(
            {
                "group": rows(specs["group"], {"id": ids, "domain_id": domain, "name": names}),
                "local_user_ids": members,
            }
        )
    if kind == "projects":
        fixed = {
            "id": ids,
            "domain_id": domain,
            "name": names,
            "parent_id": st.one_of(st.just(DEFAULT_DOMAIN), id_ref(f"{server}-projects")),
            "is_domain": st.just(False),
        }
        return st.fixed_dictionaries({"project": rows(specs["project"], fixed)})
    role_domain = st.sampled_from([NULL_DOMAIN, NULL_DOMAIN, DEFAULT_DOMAIN])
    fixed = {"id": ids, "name": names, "domain_id": role_domain}
    return st.fixed_dictionaries({"role": rows(specs["role"], fixed)})


def revocation_events() -> st.SearchStrategy[Json]:
    spec = KEYSTONE_SPECS["revocation_event"]
    fixed = {
        "audit_id": st.one_of(st.none(), new_ids, texts),
        "user_id": st.one_of(st.none(), new_ids),
        "issued_before": TIMES,
    }
    return st.fixed_dictionaries({"revocation_event": rows(spec, fixed)})


@st.composite
def dbsync_inputs(draw: st.DrawFn, server: str) -> HttpInput:
    """A dcdbsync v1.0 request for ``server`` (``dbsync-sim`` or ``dbsync-agent``)."""
    plural = draw(st.sampled_from(list(KIND_TABLES)))
    oid = draw(st.one_of(id_ref(f"{server}-{plural}"), literal_ids()))
    choice = draw(st.sampled_from(["create", "create", "replace", "replace", "get", "list"]))
    choice = draw(st.sampled_from([choice, choice, choice, "event", "event-ref", "junk"]))
    body = b""
    method = "GET"
    if choice == "create":
        method, path = "POST", f"/identity/{plural}/"
        body = draw(encoded(mutated(dbsync_records(plural, server), most=2)))
    elif choice == "replace":
        method, path = "PUT", f"/identity/{plural}/{oid}"
        body = draw(encoded(mutated(dbsync_records(plural, server), most=2)))
    elif choice == "get":
        path = f"/identity/{plural}/{oid}"
    elif choice == "list":
        path = f"/identity/{plural}/"
    elif choice == "event":
        method = draw(st.sampled_from(["POST", "POST", "GET"]))
        path = "/identity/token-revocation-events/"
        body = draw(encoded(mutated(revocation_events(), most=2))) if method == "POST" else b""
    elif choice == "event-ref":
        method = draw(st.sampled_from(["GET", "DELETE"]))
        by = draw(st.sampled_from(["audits", "users", "x"]))
        ref = draw(st.one_of(id_ref(f"{server}-events"), literal_ids()))
        path = f"/identity/token-revocation-events/{by}/{ref}"
    else:
        method = draw(st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE"]))
        path = "/" + draw(st.text("abcdefghijklmnopqrstuvwxyz0123456789/._-%?=&", max_size=40))
        body = draw(encoded(json_values))
    return HttpInput(
        surface=server,
        target=server,
        method=method,
        path=path,
        body=body,
        content_type=draw(content_types),
        auth=draw(st.sampled_from(["admin"] * 10 + ["none", "bogus"])),
    )


@dataclass
class Weights:
    """How a campaign's inputs are shared among the surfaces (relative weights)."""

    shares: dict[str, int] = field(
        default_factory=lambda: {
            "openapi": 15,
            "api": 10,
            "identity": 25,
            "platform": 15,
            "raw": 10,
            "dbsync-sim": 12,
            "dbsync-agent": 13,
        }
    )

    def split(self, total: int, surfaces: Sequence[str]) -> dict[str, int]:
        """``total`` inputs over ``surfaces`` by weight (rounding up: at least ``total``)."""
        weight = sum(self.shares[s] for s in surfaces)
        return {s: -(-total * self.shares[s] // weight) for s in surfaces}
