"""dcorch's worker topic as dcmanager calls it: upstream's subcloud lifecycle methods.

The methods, their keyword arguments and call/cast kinds are upstream's ``EngineWorkerClient``
(``dcorch/rpc/client.py`` at starlingx/distcloud 3d342a2a): ``add_subcloud``, ``del_subcloud``,
``update_subcloud_states``, ``update_subcloud_version`` and ``update_subcloud_management_ip`` are
calls, ``add/remove_subcloud_sync_endpoint_type`` and ``sync_request`` casts. Each handler runs
the same :class:`~dcorch.lifecycle.SubcloudLifecycle` method as the v1 API and, like upstream's
``EngineWorkerService``, replies None.

A refusal is an :class:`RpcFailure` named as upstream's would be, so an oslo.messaging client
re-raises what dcmanager expects (docs/behaviour.md#dcmanager-rpc): an unknown region is
``dcorch.common.exceptions.SubcloudNotFound``; a duplicate region is the unique-constraint
error of upstream's database layer, ``oslo_db.exception.DBDuplicateEntry`` (its
``subcloud_create`` catches it around ``session.add``, but the insert is flushed at commit,
outside that ``try``: ``dcorch/db/sqlalchemy/api.py`` at ded7177e); keyword arguments that do
not fit the method are the ``TypeError`` its Python call raised; a value of the wrong type or out
of range is ``dcorch.common.exceptions.InvalidParameterValue``. Nothing is changed by a refusal.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from dcorch.lifecycle import (
    DatabaseError,
    DatabaseUnavailable,
    InvalidInput,
    SubcloudAlreadyExists,
    SubcloudLifecycle,
    SubcloudNotFound,
)
from dcorch.rpc.contract import Context, Handler, RpcFailure

logger = logging.getLogger(__name__)

WORKER_TOPIC: Final = "dcorch-engine-worker"
"""Upstream's ``TOPIC_ORCH_ENGINE_WORKER``: where dcmanager sends lifecycle calls."""

DCORCH_EXCEPTIONS: Final = "dcorch.common.exceptions"
OSLO_DB_EXCEPTIONS: Final = "oslo_db.exception"
BUILTINS: Final = "builtins"


@dataclass(frozen=True, slots=True)
class Arg:
    """One keyword argument of a method: its name and the JSON types it may have."""

    name: str
    types: tuple[type, ...]
    required: bool = True


_TEXT = (str,)
_TEXT_OR_NONE = (str, type(None))
_LIST_OR_NONE = (list, tuple, type(None))

SIGNATURES: Final[Mapping[str, tuple[Arg, ...]]] = {
    "add_subcloud": (
        Arg("subcloud_name", _TEXT),
        Arg("sw_version", _TEXT),
        Arg("management_ip", _TEXT),
    ),
    "del_subcloud": (Arg("subcloud_name", _TEXT),),
    "update_subcloud_states": (
        Arg("subcloud_name", _TEXT),
        Arg("management_state", _TEXT_OR_NONE),
        Arg("availability_status", _TEXT_OR_NONE),
    ),
    "update_subcloud_version": (Arg("subcloud_name", _TEXT), Arg("sw_version", _TEXT)),
    "update_subcloud_management_ip": (Arg("subcloud_name", _TEXT), Arg("management_ip", _TEXT)),
    "add_subcloud_sync_endpoint_type": (
        Arg("subcloud_name", _TEXT),
        Arg("endpoint_type_list", _LIST_OR_NONE, required=False),
    ),
    "remove_subcloud_sync_endpoint_type": (
        Arg("subcloud_name", _TEXT),
        Arg("endpoint_type_list", _LIST_OR_NONE, required=False),
    ),
    "sync_request": (Arg("endpoint_type", _TEXT),),
}
"""Upstream's server-side signatures (``EngineWorkerService``), context left out."""

_JSON_NAMES: Final = {str: "string", list: "list", tuple: "list", type(None): "null"}


def _bind(method: str, args: tuple[Arg, ...], kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword arguments, checked against the method's signature, or an RpcFailure."""
    known = {a.name for a in args}
    unexpected = sorted(set(kwargs) - known)
    if unexpected:
        names = ", ".join(repr(n) for n in unexpected)
        plural = "s" if len(unexpected) > 1 else ""
        raise RpcFailure(
            "TypeError", BUILTINS, f"{method}() got unexpected keyword argument{plural} {names}"
        )
    missing = [a.name for a in args if a.required and a.name not in kwargs]
    if missing:
        names = ", ".join(repr(n) for n in missing)
        count = len(missing)
        raise RpcFailure(
            "TypeError",
            BUILTINS,
            f"{method}() missing {count} required argument{'s' if count > 1 else ''}: {names}",
        )
    for arg in args:
        value = kwargs.get(arg.name)
        if arg.name in kwargs and not isinstance(value, arg.types):
            expected = " or ".join(dict.fromkeys(_JSON_NAMES[t] for t in arg.types))
            raise _invalid(f"{arg.name} must be a {expected}, got {type(value).__name__}")
    return dict(kwargs)


def _invalid(message: str) -> RpcFailure:
    return RpcFailure("InvalidParameterValue", DCORCH_EXCEPTIONS, message, kwargs={"err": message})


def as_rpc_failure(exc: Exception) -> RpcFailure | None:
    """Upstream's name for a lifecycle refusal (None: not a refusal, let it propagate)."""
    if isinstance(exc, InvalidInput):
        return _invalid(str(exc))
    if isinstance(exc, SubcloudNotFound):
        region = exc.region_name
        return RpcFailure(
            "SubcloudNotFound",
            DCORCH_EXCEPTIONS,
            f"Subcloud {region} not found",
            kwargs={"region_name": region},
        )
    if isinstance(exc, SubcloudAlreadyExists):
        region = exc.region_name
        return RpcFailure(
            "DBDuplicateEntry",
            OSLO_DB_EXCEPTIONS,
            f"duplicate entry: subcloud region_name={region} already exists",
            kwargs={"columns": ["region_name"], "value": region},
        )
    if isinstance(exc, DatabaseUnavailable):
        return RpcFailure("DBConnectionError", OSLO_DB_EXCEPTIONS, str(exc))
    if isinstance(exc, DatabaseError):
        return RpcFailure("DBError", OSLO_DB_EXCEPTIONS, str(exc))
    return None


class DcmanagerEndpoint:
    """The :class:`~dcorch.rpc.contract.Endpoint` of the worker topic (:data:`WORKER_TOPIC`).

    ``handlers()`` maps each method to ``await handler(ctxt, **kwargs)``. The context is
    accepted and logged, not checked: upstream checks none either (the broker's credentials
    are the authentication).
    """

    def __init__(self, lifecycle: SubcloudLifecycle) -> None:
        self._lifecycle = lifecycle
        lc = lifecycle
        self._methods: dict[str, Callable[..., Awaitable[object]]] = {
            "add_subcloud": lc.add_subcloud,
            "del_subcloud": lc.del_subcloud,
            "update_subcloud_states": lc.update_subcloud_states,
            "update_subcloud_version": lc.update_subcloud_version,
            "update_subcloud_management_ip": lc.update_subcloud_management_ip,
            "add_subcloud_sync_endpoint_type": lc.add_subcloud_sync_endpoint_type,
            "remove_subcloud_sync_endpoint_type": lc.remove_subcloud_sync_endpoint_type,
            "sync_request": lc.sync_request,
        }
        assert self._methods.keys() == SIGNATURES.keys()

    def handlers(self) -> Mapping[str, Handler]:
        return {name: self._handler(name) for name in self._methods}

    def _handler(self, method: str) -> Handler:
        run = self._methods[method]
        args = SIGNATURES[method]

        async def handle(ctxt: Context, **kwargs: Any) -> None:
            bound = _bind(method, args, kwargs)
            request_id = ctxt.get("request_id", "")
            try:
                await run(**bound)
            except Exception as exc:
                failure = as_rpc_failure(exc)
                if failure is None:
                    raise
                logger.info(
                    "rpc.refused method=%s request=%s error=%s: %s",
                    method,
                    request_id,
                    failure.exc_class,
                    failure.message,
                )
                raise failure from exc
            logger.info("rpc.done method=%s request=%s args=%s", method, request_id, bound)

        handle.__name__ = handle.__qualname__ = method
        return handle
