"""Rate limits and quotas, all declared here and enforced by flask-limiter.

Every limit is an application limit (checked before every request) whose key and whether it
applies are computed per request:

- per client IP, for everyone, counted before credentials are checked (so guessing keys or
  passwords is limited too);
- per principal (user or API key): the key's own rate limit, else ``RATELIMIT_PER_PRINCIPAL``;
- per API key per day: the key's daily quota;
- per route (``RATELIMIT_ROUTES``: endpoint -> limit) and per model (``RATELIMIT_MODELS``:
  model -> limit), both per principal;
- on ``POST /auth/token``: per IP and per submitted username.

The client IP is ``request.remote_addr``; it comes from ``X-Forwarded-For`` only when
``TRUSTED_PROXY_COUNT`` says how many proxies to trust (ProxyFix in create_app).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from flask import Flask, Response, current_app, request
from flask_limiter import ApplicationLimit, Limiter

from accounts import ratelimit  # noqa: F401 - registers the sql+ storage schemes with limits
from accounts.auth import principal_if_valid
from blueprints.io import read_json
from serving.errors import ServingError

LOGIN_ENDPOINTS = frozenset({"auth.Token", "pages.login"})
# Returned for limits that the request is exempt from (flask-limiter evaluates the limit
# string before the exemption); never counted.
_UNUSED = "1 per second"


def client_ip() -> str:
    return request.remote_addr or "unknown"


def _principal_key() -> str:
    principal = principal_if_valid()
    return principal.limit_key if principal else f"ip:{client_ip()}"


def _anonymous() -> bool:
    return principal_if_valid() is None


def _principal_limit() -> str:
    principal = principal_if_valid()
    if principal is not None and principal.rate_limit:
        return principal.rate_limit
    limit: str = current_app.config["RATELIMIT_PER_PRINCIPAL"]
    return limit


def _quota() -> str:
    principal = principal_if_valid()
    if principal is None or not principal.daily_quota:
        return _UNUSED
    return f"{principal.daily_quota} per day"


def _no_quota() -> bool:
    principal = principal_if_valid()
    return principal is None or not principal.daily_quota


def _model() -> str | None:
    name = (request.view_args or {}).get("name")
    if name and request.method == "POST":
        return str(name)
    return None


def _by_config(
    table: str, key: Callable[[], str | None]
) -> tuple[Callable[[], str], Callable[[], bool]]:
    def limit() -> str:
        # flask-limiter asks for the limit before it asks whether it is exempt.
        value: str = current_app.config[table].get(key(), _UNUSED)
        return value

    def exempt() -> bool:
        found = key()
        return found is None or found not in current_app.config[table]

    return limit, exempt


def _is_login() -> bool:
    return request.endpoint in LOGIN_ENDPOINTS and request.method == "POST"


def _login_username() -> str:
    if request.mimetype == "application/x-www-form-urlencoded":
        name = request.form.get("username")  # the sign-in page
    else:
        try:
            body = read_json()
        except ServingError:
            # Not a JSON login (an API key exchange) or a malformed one that the view refuses.
            body = None
        name = body.get("username") if isinstance(body, dict) else None
    return f"user:{str(name)[:64].lower()}" if name else "user:"


def _rate_limit_headers(limiter: Limiter) -> Callable[[Response], Response]:
    """X-RateLimit-* and the IETF RateLimit-* headers for the limit closest to breach, and
    Retry-After on a 429 only (flask-limiter's own injection would put Retry-After on every
    answer and overwrite the one a 503 carries)."""

    def add(response: Response) -> Response:
        if response.status_code == 429:
            current = limiter.current_limit
        else:
            evaluated = limiter.current_limits
            current = min(evaluated, key=lambda lim: lim.remaining) if evaluated else None
        if current is None:
            return response
        reset_seconds = max(0, math.ceil(current.reset_at - time.time()))
        for prefix in ("X-RateLimit-", "RateLimit-"):
            response.headers[f"{prefix}Limit"] = str(current.limit.amount)
            response.headers[f"{prefix}Remaining"] = str(current.remaining)
        response.headers["X-RateLimit-Reset"] = str(int(current.reset_at))
        response.headers["RateLimit-Reset"] = str(reset_seconds)
        if response.status_code == 429:
            response.headers["Retry-After"] = str(max(1, reset_seconds))
        return response

    return add


def init_limits(app: Flask) -> Limiter:
    route_limit, route_exempt = _by_config("RATELIMIT_ROUTES", lambda: request.endpoint)
    model_limit, model_exempt = _by_config("RATELIMIT_MODELS", _model)
    limits = [
        ApplicationLimit(
            lambda: current_app.config["RATELIMIT_PER_IP"], key_function=client_ip, scope="ip"
        ),
        ApplicationLimit(
            lambda: current_app.config["RATELIMIT_LOGIN_PER_IP"],
            key_function=client_ip,
            scope="login-ip",
            exempt_when=lambda: not _is_login(),
        ),
        ApplicationLimit(
            lambda: current_app.config["RATELIMIT_LOGIN_PER_USER"],
            key_function=_login_username,
            scope="login-user",
            exempt_when=lambda: not _is_login(),
        ),
        ApplicationLimit(
            _principal_limit,
            key_function=_principal_key,
            scope="principal",
            exempt_when=_anonymous,
        ),
        ApplicationLimit(_quota, key_function=_principal_key, scope="quota", exempt_when=_no_quota),
        ApplicationLimit(
            route_limit,
            key_function=_principal_key,
            scope=lambda endpoint: f"route:{endpoint}",
            exempt_when=route_exempt,
        ),
        ApplicationLimit(
            model_limit,
            key_function=_principal_key,
            scope=lambda _endpoint: f"model:{_model()}",
            exempt_when=model_exempt,
        ),
    ]
    limiter = Limiter(
        key_func=client_ip,
        application_limits=limits,
        headers_enabled=False,  # written by _rate_limit_headers
        storage_uri=app.config["RATELIMIT_STORAGE_URI"],
        strategy="fixed-window",
        # An unreachable counter store must not stop predictions: limits pause, and
        # flask-limiter logs it.
        swallow_errors=True,
    )
    limiter.init_app(app)
    app.after_request(_rate_limit_headers(limiter))
    app.extensions["modelgate.limiter"] = limiter
    return limiter
