"""Errors a sync driver raises, and what the sync actor does with each.

It mirrors upstream's four outcomes of one attempt (docs/behaviour.md#request-outcomes-and-retries),
so the retry policy is chosen by ``except`` clause, never by inspecting messages::

    SyncError                       base of every expected failure of one attempt
    ├── SubcloudUnreachable         connect error / timeout / transport error (SyncRequestTimeout):
    │                               stop the pair, keep its queue, try again later
    ├── TransientSyncError          5xx, repeated 401, anything odd (SyncRequestFailedRetry):
    │                               retry with backoff, then mark the request failed
    ├── PermanentSyncError          no handler, missing data, dependency missing, 4xx on create
    │   │                           (SyncRequestFailed): failed at once, no retry
    │   ├── RemoteNotFound          the subcloud or master answered 404
    │   └── RemoteConflict          the subcloud answered 409 (object already exists)
    └── SyncAborted                 expired certificate (SyncRequestAbortedBySystem): aborted

Anything else escaping a driver is a bug (or an answer we do not understand) and crashes the
sync actor for its supervisor to restart; the request stays queued, its try counter bounding that.
"""

from __future__ import annotations


class SyncError(Exception):
    """An attempt to apply one request (or to audit) failed in an expected way."""


class SubcloudUnreachable(SyncError):
    """The subcloud (or the master) could not be reached: connect error, timeout, reset."""


class TransientSyncError(SyncError):
    """The remote answered with an error that may go away (5xx, auth trouble, bad gateway)."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class PermanentSyncError(SyncError):
    """Retrying cannot help: bad or missing data, missing dependency, rejected create."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class RemoteNotFound(PermanentSyncError):
    """The remote service answered 404 for the object."""


class RemoteConflict(PermanentSyncError):
    """The remote service answered 409: the object already exists."""


class SyncAborted(SyncError):
    """The system refused the request for good (an expired certificate)."""
