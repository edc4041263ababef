"""Errors a sync driver raises, and what the sync actor does with each.

It mirrors upstream's four outcomes of one attempt (docs/behaviour.md#request-outcomes-and-retries),
so the retry policy is chosen by ``except`` clause, never by inspecting messages::

    SyncError                       base of every expected failure of one attempt
    ├── SubcloudUnreachable         connect error / timeout / transport error (SyncRequestTimeout):
    │                               stop the pair, keep its queue, try again later
    ├── MasterUnavailable           a System Controller service (keystone, DB-sync, sysinv,
    │                               dcmanager) unreachable or failing: not the subcloud's fault;
    │                               stop the pair, retry at the master's next probe, time out
    │                               the request when its budget is spent
    ├── TransientSyncError          5xx, repeated 401, anything odd (SyncRequestFailedRetry):
    │                               retry with backoff, then mark the request failed
    ├── PermanentSyncError          no handler, missing data, dependency missing, 4xx on create
    │   │                           (SyncRequestFailed): failed at once, no retry
    │   ├── RemoteNotFound          the subcloud or master answered 404
    │   └── RemoteConflict          the subcloud answered 409 (object already exists)
    └── SyncAborted                 expired certificate (SyncRequestAbortedBySystem): aborted

Anything else escaping a driver is a bug (or an answer we do not understand) and crashes the
sync actor for its supervisor to restart; the request stays queued, its try counter bounding that.

Every error raised by :mod:`dcorch.remote.http` carries the ``url`` that failed, so a log line
or the v1 API can name the endpoint (docs/behaviour.md#master-outage).
"""

from __future__ import annotations


class SyncError(Exception):
    """An attempt to apply one request (or to audit) failed in an expected way.

    ``url``: the URL whose call failed, when one did (None: a failure of the data).
    """

    def __init__(self, message: str, *, url: str | None = None) -> None:
        super().__init__(message)
        self.url = url


class SubcloudUnreachable(SyncError):
    """The subcloud could not be reached: connect error, timeout, reset.

    :mod:`dcorch.remote.http` raises it for any peer; the master's clients turn it into
    :class:`MasterUnavailable` (:mod:`dcorch.remote.master_health`).
    """


class MasterUnavailable(SyncError):
    """A System Controller service could not be reached or failed (transport error, 5xx, 408,
    429, authentication refused), or is known down and not due for its next probe.

    Attributes:
        dependency: ``keystone``, ``dbsync``, ``sysinv`` or ``dcmanager``.
        url: the URL that failed (the last one, when the call was not even tried).
        reason: what went wrong (``ConnectError``, ``503 ...``, ``timed out``).
        retry_at: trio time of the dependency's next probe (when a retry can go out).
    """

    def __init__(self, dependency: str, url: str, reason: str, *, retry_at: float) -> None:
        super().__init__(f"master {dependency} unavailable at {url}: {reason}", url=url)
        self.dependency = dependency
        self.reason = reason
        self.retry_at = retry_at


class TransientSyncError(SyncError):
    """The remote answered with an error that may go away (5xx, auth trouble, bad gateway)."""

    def __init__(self, message: str, *, status: int | None = None, url: str | None = None) -> None:
        super().__init__(message, url=url)
        self.status = status


class PermanentSyncError(SyncError):
    """Retrying cannot help: bad or missing data, missing dependency, rejected create."""

    def __init__(self, message: str, *, status: int | None = None, url: str | None = None) -> None:
        super().__init__(message, url=url)
        self.status = status


class RemoteNotFound(PermanentSyncError):
    """The remote service answered 404 for the object."""


class RemoteConflict(PermanentSyncError):
    """The remote service answered 409: the object already exists."""


class SyncAborted(SyncError):
    """The system refused the request for good (an expired certificate)."""
