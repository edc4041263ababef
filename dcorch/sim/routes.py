"""A tiny route table: path templates with ``{}`` placeholders, matched by segment count.

Each simulated service registers its handlers here. Only templates with the request's segment
count are tried: dispatch is constant-time however many clouds exist. Handlers are synchronous.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from dcorch.sim.http import HttpError, Request, Response

if TYPE_CHECKING:
    from dcorch.sim.state import CloudState

Handler = Callable[["CloudState", Request, tuple[str, ...]], Response]


class RouteTable:
    """Templates -> {method: handler}; unknown path is a 404, known path + wrong method a 405."""

    def __init__(self, service: str, error: type[HttpError], *, count: bool = True) -> None:
        self.service = service
        self.error = error
        self.count = count
        self._by_length: dict[
            int, list[tuple[tuple[str | None, ...], str, dict[str, Handler]]]
        ] = {}

    def add(self, template: str, **methods: Handler) -> None:
        """Register ``template`` (``users/{}/password``) for the given upper-case methods."""
        parts = tuple(None if p == "{}" else p for p in template.split("/") if p)
        self._by_length.setdefault(len(parts), []).append((parts, template, methods))

    def dispatch(self, cloud: CloudState, req: Request) -> Response:
        """Find and run the handler; count the request under its route template."""
        segments = [s for s in req.path.split("/") if s]
        for parts, template, methods in self._by_length.get(len(segments), ()):
            params: list[str] = []
            for want, got in zip(parts, segments, strict=True):
                if want is None:
                    params.append(got)
                elif want != got:
                    break
            else:
                req.route = template
                if self.count:
                    cloud.count(f"{req.method} {self.service} {template}")
                handler = methods.get(req.method)
                if handler is None and req.method == "HEAD":
                    handler = methods.get("GET")
                if handler is None:
                    raise self.error(405, f"the method {req.method} is not allowed for {template}")
                return handler(cloud, req, tuple(params))
        if self.count:
            cloud.count(f"{req.method} {self.service} <unknown>")
        raise self.error(404, f"the resource could not be found: {req.path}")
