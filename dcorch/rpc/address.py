"""Where the broker is: oslo.messaging's ``rabbit://`` transport URL, parsed once at start-up.

The URL carries the password, so everything that logs or reports the broker (``/health``,
``/metrics``, log lines) uses :attr:`BrokerAddress.redacted`, never the URL itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import quote, unquote, urlsplit

DEFAULT_PORT = 5672


class BadTransportUrl(ValueError):
    """``rpc.transport_url`` is not a ``rabbit://`` URL this transport can use."""


@dataclass(frozen=True, slots=True)
class BrokerHost:
    """One broker of the URL (oslo accepts several, tried in turn)."""

    host: str
    port: int
    username: str
    password: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    """The brokers and the virtual host named by a transport URL."""

    hosts: tuple[BrokerHost, ...]
    virtual_host: str

    @property
    def redacted(self) -> str:
        """The URL with every password replaced by ``***`` (safe to log and to report)."""
        netloc = ",".join(
            f"{quote(h.username, safe='')}:***@{_host_port(h)}" if h.username else _host_port(h)
            for h in self.hosts
        )
        vhost = "" if self.virtual_host == "/" else quote(self.virtual_host, safe="")
        return f"rabbit://{netloc}/{vhost}"


def _host_port(host: BrokerHost) -> str:
    name = f"[{host.host}]" if ":" in host.host else host.host
    return f"{name}:{host.port}"


def parse_transport_url(url: str) -> BrokerAddress:
    """Parse ``rabbit://user:pass@host:port[,user:pass@host2:port]/vhost`` as oslo does.

    The virtual host is the path without its leading slash; an empty path is RabbitMQ's
    default virtual host ``/`` (oslo's reading of ``rabbit://guest:guest@host:5672/``).

    Raises:
        BadTransportUrl: another scheme, no host, or a port that is not a number (the error
            message never contains the password).
    """
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("rabbit", "amqp"):
        raise BadTransportUrl(
            f"rpc.transport_url must start with rabbit:// (got scheme {scheme or url[:10]!r})"
        )
    netloc, _, path = rest.partition("/")
    path = path.split("?", 1)[0]
    if not netloc:
        raise BadTransportUrl("rpc.transport_url names no broker host")
    hosts = tuple(_parse_host(part) for part in netloc.split(","))
    vhost = unquote(path) if path else "/"
    return BrokerAddress(hosts=hosts, virtual_host=vhost)


def _parse_host(part: str) -> BrokerHost:
    parsed = urlsplit(f"//{part}")
    try:
        port = parsed.port or DEFAULT_PORT
    except ValueError:
        raise BadTransportUrl(f"rpc.transport_url: bad port for host {parsed.hostname}") from None
    if not parsed.hostname:
        raise BadTransportUrl("rpc.transport_url names no broker host")
    return BrokerHost(
        host=parsed.hostname,
        port=port,
        username=unquote(parsed.username or ""),
        password=unquote(parsed.password or ""),
    )
