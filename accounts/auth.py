"""Authentication and authorisation for every route, in one place.

Default deny: a view is reachable without credentials only if marked ``@public``; every other
view needs a principal with the permission it declares through ``@requires`` (a view that
declares nothing needs ``admin``). ``tests/security/test_permissions.py`` walks the URL map to
keep it that way. A view marked ``@page`` is an HTML page: a browser that asks for it without
valid credentials is sent to the sign-in page instead of getting the JSON 401.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, TypeVar

import jwt as pyjwt
import sqlalchemy as sa
from flask import Flask, Response, current_app, g, redirect, request, url_for
from flask_jwt_extended import get_jwt, verify_jwt_in_request
from flask_jwt_extended.exceptions import JWTExtendedException

from accounts.models import ApiKey, RevokedToken, User
from accounts.security import Principal, secret_matches, split_api_key
from blueprints.errors import ApiError, Forbidden, Unauthorized, error_response
from deployments.store import StateUnavailable
from extensions import db, jwt

F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger("modelgate.http")

REQUIRED_CLAIMS = ("exp", "iat", "jti", "sub", "type")
KEY_PREFIX_CLAIM = "key_prefix"
_CHALLENGE = Unauthorized.headers


def public(view: F) -> F:
    """Reachable without credentials."""
    view._modelgate_public = True  # type: ignore[attr-defined]
    return view


def requires(permission: str) -> Callable[[F], F]:
    """The permission a view needs: models:read, infer, deploy or admin."""

    def mark(view: F) -> F:
        view._modelgate_permission = permission  # type: ignore[attr-defined]
        return view

    return mark


def page(view: F) -> F:
    """An HTML page: browsers without valid credentials are redirected to the sign-in page."""
    view._modelgate_page = True  # type: ignore[attr-defined]
    return view


def _view_attribute(name: str) -> Any:
    view = current_app.view_functions.get(request.endpoint or "")
    if view is None:
        return None
    view_class = getattr(view, "view_class", None)
    if view_class is not None:
        method = getattr(view_class, request.method.lower(), None)
        if request.method == "HEAD" and method is None:
            method = getattr(view_class, "get", None)
        return getattr(method, name, None)
    return getattr(view, name, None)


def _is_public_endpoint() -> bool:
    endpoint = request.endpoint or ""
    if endpoint == "static" or endpoint.startswith("api-docs."):
        return True
    return bool(_view_attribute("_modelgate_public"))


def _principal_from_api_key(token: str) -> Principal:
    parts = split_api_key(token)
    key = None
    if parts is not None:
        key = db.session.execute(sa.select(ApiKey).filter_by(prefix=parts[0])).scalar()
    if key is None or parts is None or not secret_matches(parts[1], key.secret_hash):
        raise Unauthorized("invalid API key")
    if key.revoked_at is not None:
        raise Unauthorized("this API key has been revoked")
    return _key_principal(key)


def _raw_token() -> str | None:
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        return header.removeprefix("Bearer ").strip()
    return request.cookies.get(current_app.config["JWT_ACCESS_COOKIE_NAME"])


def _principal_from_jwt() -> Principal:
    verify_jwt_in_request()
    claims = get_jwt()
    return principal_from_subject(claims.get("sub"), key_prefix=claims.get(KEY_PREFIX_CLAIM))


def principal_from_subject(subject: object, *, key_prefix: object = None) -> Principal:
    """A token's subject is ``user:<id>`` or ``key:<id>`` (a key exchanged for a token, which
    also carries the prefix of the secret it was exchanged for in ``key_prefix``).

    Looked up on every request, so a disabled user or a revoked or rotated key loses access
    on every worker at once, whatever tokens are still in circulation.
    """
    kind, _, raw_id = str(subject).partition(":")
    if kind not in ("user", "key") or not raw_id.isdigit():
        raise Unauthorized("invalid token subject")
    if kind == "key":
        key = db.session.get(ApiKey, int(raw_id))
        # Rotation gives the key a new prefix: tokens exchanged for the old secret end with it.
        if key is None or key.revoked_at is not None or key.prefix != key_prefix:
            raise Unauthorized("this API key has been revoked or rotated")
        return _key_principal(key)
    user = db.session.get(User, int(raw_id))
    if user is None or user.disabled:
        raise Unauthorized("this account is disabled or no longer exists")
    return Principal(
        kind="user",
        id=user.id,
        name=user.username,
        role=user.role,
        scopes=tuple(user.scopes.split()),
    )


def _key_principal(key: ApiKey) -> Principal:
    return Principal(
        kind="key",
        id=key.id,
        name=key.name,
        role=key.role,
        scopes=tuple(key.scopes.split()),
        rate_limit=key.rate_limit,
        daily_quota=key.daily_quota,
    )


# Principals this process authenticated recently, by a digest of the credential. Used only
# while the database cannot be reached, so that predictions go on for callers already known
# (revocations made meanwhile cannot be seen by anyone until it is back).
_last_known: OrderedDict[str, Principal] = OrderedDict()
_LAST_KNOWN_SIZE = 4096


def _credential_digest() -> str:
    credential = request.headers.get("X-API-Key") or _raw_token() or ""
    return hashlib.sha256(credential.encode()).hexdigest()


def authenticate() -> Principal:
    """The caller's principal from X-API-Key or a JWT; raises Unauthorized or a JWT error."""
    digest = _credential_digest()
    try:
        api_key = request.headers.get("X-API-Key")
        principal = _principal_from_api_key(api_key) if api_key else _principal_from_jwt()
    except sa.exc.OperationalError as err:
        db.session.rollback()
        known = _last_known.get(digest)
        if known is None:
            raise StateUnavailable("credentials cannot be checked right now") from err
        log.warning("database unreachable: using the last known principal %s", known.limit_key)
        return known
    _last_known[digest] = principal
    _last_known.move_to_end(digest)
    while len(_last_known) > _LAST_KNOWN_SIZE:
        _last_known.popitem(last=False)
    return principal


def current_principal() -> Principal | None:
    """The authenticated caller, or None on a public route; authenticates once per request
    and raises Unauthorized (or a JWT error) for bad credentials."""
    if "principal" not in g:
        anonymous = request.endpoint is None or request.method == "OPTIONS"
        g.principal = None if anonymous or _is_public_endpoint() else authenticate()
    principal: Principal | None = g.principal
    return principal


def principal_if_valid() -> Principal | None:
    """The caller if their credentials hold, else None (bad credentials do not raise here).

    For the rate limits, which run before ``_enforce``: flask-limiter resolves every limit
    before it counts any, so a raise here would skip the per-IP count. This way a request with
    a guessed key or a forged token counts against its client IP like an anonymous one, and
    ``_enforce`` then refuses it with the 401.
    """
    try:
        return current_principal()
    except (ApiError, JWTExtendedException, pyjwt.PyJWTError):
        return None


def _sign_in_instead() -> Response | None:
    """For a browser asking for a page: a redirect to the sign-in page that comes back here.

    Only GET and HEAD of views marked ``@page``, and only for clients that take HTML: an API
    client (no Accept, or JSON only) still gets the 401 envelope with its challenge.
    """
    wanted = request.method in ("GET", "HEAD") and request.accept_mimetypes.accept_html
    if not wanted or not _view_attribute("_modelgate_page"):
        return None
    target = request.full_path.rstrip("?")
    return redirect(url_for("pages.login", next=target))


def _enforce() -> Response | None:
    try:
        principal = current_principal()
    except (Unauthorized, JWTExtendedException, pyjwt.PyJWTError):
        instead = _sign_in_instead()
        if instead is None:
            raise
        return instead
    if principal is None:
        return None
    permission = _view_attribute("_modelgate_permission") or "admin"
    if not principal.can(permission):
        raise Forbidden(f"this needs the '{permission}' permission")
    if permission == "infer":
        model = (request.view_args or {}).get("name")
        if model is not None and not principal.may_infer(model):
            raise Forbidden(f"no scope allows inference on '{model}'")
    return None


def _jwt_error(message: str) -> Response:
    return error_response(401, "unauthorized", message, headers=_CHALLENGE)


def _token_has_required_claims(_header: dict[str, Any], data: dict[str, Any]) -> bool:
    # flask-jwt-extended fills in a missing "type" and "jti" before this runs; check the
    # token as it was sent so a token without them is refused rather than defaulted.
    raw = _raw_token()
    if raw is None:
        return False
    try:
        sent = pyjwt.decode(raw, options={"verify_signature": False})
    except pyjwt.InvalidTokenError:
        return False
    return all(claim in sent for claim in REQUIRED_CLAIMS) and data.get("jti") is not None


def _token_revoked(_header: dict[str, Any], data: dict[str, Any]) -> bool:
    # Runs before _token_has_required_claims: a token without a jti is refused there, and
    # looking up a NULL key would only warn (SQLAlchemy may make that an error).
    jti = data.get("jti")
    if jti is None:
        return False
    try:
        return _revoked(jti, data)
    except sa.exc.OperationalError:
        # Unreachable database: the last known state (not revoked) stands; see authenticate().
        db.session.rollback()
        return False


def _revoked(jti: str, data: dict[str, Any]) -> bool:
    if db.session.get(RevokedToken, jti) is not None:
        return True
    kind, _, raw_id = str(data.get("sub")).partition(":")
    if kind == "user" and raw_id.isdigit():
        user = db.session.get(User, int(raw_id))
        cutoff = user.tokens_valid_after if user is not None else None
        if cutoff is not None:
            # SQLite hands back naive datetimes; they were stored in UTC.
            cutoff = cutoff if cutoff.tzinfo else cutoff.replace(tzinfo=dt.UTC)
            # iat has whole seconds: a token from the second of the change itself survives,
            # so signing in again right after a password change works at once.
            return int(data.get("iat", 0)) < int(cutoff.timestamp())
    return False


def revoke(claims: dict[str, Any]) -> None:
    """Revoke a token by its jti until it would have expired anyway."""
    if db.session.get(RevokedToken, claims["jti"]) is None:
        expires = dt.datetime.fromtimestamp(claims["exp"], dt.UTC)
        db.session.add(RevokedToken(jti=claims["jti"], expires_at=expires))


def revoke_and_commit(*claims: dict[str, Any]) -> None:
    """Revoke these tokens and commit. Two sign-outs of the same token at once both insert
    its jti; the loser retries once, finds it revoked, and revokes the rest."""
    for attempt in range(2):
        try:
            for one in claims:
                revoke(one)  # its lookup may flush the previous insert: inside the try
            db.session.commit()
            return
        except sa.exc.IntegrityError:
            db.session.rollback()
            if attempt:
                raise


def init_auth(app: Flask) -> None:
    jwt.token_verification_loader(_token_has_required_claims)
    jwt.token_in_blocklist_loader(_token_revoked)
    jwt.unauthorized_loader(
        lambda reason: _jwt_error(f"missing or malformed credentials: {reason}")
    )
    jwt.invalid_token_loader(lambda reason: _jwt_error("invalid token"))
    jwt.expired_token_loader(lambda _h, _d: _jwt_error("the token has expired"))
    jwt.revoked_token_loader(lambda _h, _d: _jwt_error("the token has been revoked"))
    jwt.token_verification_failed_loader(
        lambda _h, _d: _jwt_error("the token lacks required claims")
    )
    jwt.needs_fresh_token_loader(lambda _h, _d: _jwt_error("a fresh token is required"))
    jwt.user_lookup_error_loader(lambda _h, _d: _jwt_error("unknown user"))
    app.before_request(_enforce)
