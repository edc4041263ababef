"""A small supervised actor runtime on Trio; it never imports dcorch, config or quart.

    from actors import Actor, ActorSpec, open_actor_system

    class Echo(Actor[str, str]):
        async def handle(self, message: str) -> str:
            return message

    async with open_actor_system(ActorSpec(name="echo", factory=Echo)) as system:
        assert await system.lookup("echo").ask("hi") == "hi"

Layers: `errors` and `_spec`/`_state` (values) -> `_mailbox` -> `_actor` -> `_ref` and
`_node` -> `_supervisor` -> `_system`. Each layer only uses the ones before it.
"""

import logging as _logging

from ._actor import Actor as Actor
from ._ref import ActorRef as ActorRef
from ._ref import SupervisorRef as SupervisorRef
from ._ref import TaskRef as TaskRef
from ._spec import ActorSpec as ActorSpec
from ._spec import Backoff as Backoff
from ._spec import ChildSpec as ChildSpec
from ._spec import Restart as Restart
from ._spec import RestartIntensity as RestartIntensity
from ._spec import Strategy as Strategy
from ._spec import SupervisorSpec as SupervisorSpec
from ._spec import TaskSpec as TaskSpec
from ._state import ActorStatistics as ActorStatistics
from ._state import Kind as Kind
from ._state import NodeSnapshot as NodeSnapshot
from ._state import State as State
from ._system import ActorSystem as ActorSystem
from ._system import open_actor_system as open_actor_system
from .errors import ActorError as ActorError
from .errors import ActorNotFound as ActorNotFound
from .errors import ActorStopped as ActorStopped
from .errors import AskTimeout as AskTimeout
from .errors import DuplicateActorName as DuplicateActorName
from .errors import MailboxFull as MailboxFull
from .errors import RestartIntensityExceeded as RestartIntensityExceeded

# a library never configures logging, but it keeps Python's last-resort handler quiet
_logging.getLogger(__name__).addHandler(_logging.NullHandler())

__all__ = (
    "Actor",
    "ActorError",
    "ActorNotFound",
    "ActorRef",
    "ActorSpec",
    "ActorStatistics",
    "ActorStopped",
    "ActorSystem",
    "AskTimeout",
    "Backoff",
    "ChildSpec",
    "DuplicateActorName",
    "Kind",
    "MailboxFull",
    "NodeSnapshot",
    "Restart",
    "RestartIntensity",
    "RestartIntensityExceeded",
    "State",
    "Strategy",
    "SupervisorRef",
    "SupervisorSpec",
    "TaskRef",
    "TaskSpec",
    "open_actor_system",
)
