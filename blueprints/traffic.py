"""From an HTTP request to the serving core's RouteRequest, and the route back to headers."""

from __future__ import annotations

from flask import Flask, g, request

from extensions import inference_service
from serving.routing import RouteRequest


def route_request(model: str, version: int | None = None, label: str | None = None) -> RouteRequest:
    """Pinned version or label from the URL, and the sticky key the model's experiment asks for."""
    if version is not None or label is not None:
        return RouteRequest(version=version, label=label)
    experiment = inference_service().policy(model).experiment
    key = None
    if experiment is not None:
        principal = g.get("principal")
        by_key = (
            experiment.sticky == "api_key" and principal is not None and principal.kind == "key"
        )
        if (experiment.sticky == "subject" and principal is not None) or by_key:
            key = principal.limit_key
        elif experiment.sticky.startswith("header:"):
            key = request.headers.get(experiment.sticky.removeprefix("header:")) or None
    return RouteRequest(sticky_key=key)


def route_headers(version: int, reason: str, variant: str | None) -> dict[str, str]:
    """Every prediction says which version served it and why."""
    headers = {"X-Model-Version": str(version), "X-Route-Reason": str(reason)}
    if variant is not None:
        headers["X-Experiment-Variant"] = variant
    return headers


# Requests that answer a waiting client: batch jobs yield to these.
_INTERACTIVE_BLUEPRINTS = ("models", "v2")


def _enter() -> None:
    if request.blueprint in _INTERACTIVE_BLUEPRINTS and request.method == "POST":
        inference_service().enter_interactive()
        g.interactive = True


def _leave(_error: BaseException | None) -> None:
    if g.pop("interactive", False):
        inference_service().leave_interactive()


def init_interactive_tracking(app: Flask) -> None:
    """Count prediction requests from their first hook to their teardown (which runs whatever
    happened), so background work waits while any is being parsed, run or encoded."""
    app.before_request(_enter)
    app.teardown_request(_leave)
