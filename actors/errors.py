"""Errors raised by the actor runtime.

Every error derives from `ActorError`, so a caller can catch the whole family at once::

    ActorError
    ├── ActorStopped              the actor is gone, or went away before handling the message
    ├── MailboxFull               tell_nowait found no room in a bounded mailbox
    ├── AskTimeout                an ask got no reply in time (also a trio.TooSlowError)
    ├── RestartIntensityExceeded  a supervisor gave up and escalates to its parent
    ├── ActorNotFound             no actor is registered under that name
    └── DuplicateActorName        a sibling already uses that name

Example::

    try:
        reply = await ref.ask("ping")
    except ActorStopped:
        reply = None

Messages are lower-case, name the actor, and have no trailing period.
"""

from __future__ import annotations

import trio


class ActorError(Exception):
    """Base class of every error the actor runtime raises on purpose."""


class ActorStopped(ActorError):
    """Raised when a message is sent to an actor that has stopped, or that stops before
    handling it (queued asks fail with this at shutdown)."""


class MailboxFull(ActorError):
    """Raised by `ActorRef.tell_nowait` when the bounded mailbox has no room; the caller
    decides whether to wait (`tell`), retry later or shed the load."""


class AskTimeout(ActorError, trio.TooSlowError):
    """Raised by `ActorRef.ask` when the reply does not arrive within the actor's default
    ask timeout. It is also a `trio.TooSlowError`, so generic timeout handling still works."""


class RestartIntensityExceeded(ActorError):
    """Raised by a supervisor that saw more restarts than its intensity allows within the
    period. Its parent supervisor treats it as a crash of the supervisor (restart or
    escalate again); at the top it ends the actor system."""


class ActorNotFound(ActorError):
    """Raised by `ActorSystem.lookup` when nothing of that kind is registered under the name."""


class DuplicateActorName(ActorError):
    """Raised when a child is started under a name one of its siblings already uses."""
