"""Tokens: sign in with a password (or exchange an API key), refresh, sign out."""

from __future__ import annotations

from typing import Any

import marshmallow as ma
import sqlalchemy as sa
from flask import current_app, request
from flask.views import MethodView
from flask_jwt_extended import (
    create_access_token,
    create_refresh_token,
    decode_token,
    get_jwt,
    verify_jwt_in_request,
)
from flask_smorest import Blueprint
from jwt import InvalidTokenError

from accounts.auth import (
    KEY_PREFIX_CLAIM,
    authenticate,
    principal_from_subject,
    public,
    requires,
    revoke_and_commit,
)
from accounts.models import User
from accounts.security import split_api_key, verify_password
from blueprints.errors import BadRequest, ErrorSchema, Forbidden, Unauthorized
from extensions import db

blp = Blueprint("auth", __name__, url_prefix="/auth", description="Sign in and tokens.")


class LoginSchema(ma.Schema):
    username = ma.fields.String(validate=ma.validate.Length(1, 64))
    password = ma.fields.String(validate=ma.validate.Length(1, 1024))


class TokenSchema(ma.Schema):
    access_token = ma.fields.String(required=True)
    refresh_token = ma.fields.String()
    token_type = ma.fields.String(required=True)
    expires_in = ma.fields.Integer(required=True, metadata={"description": "Seconds"})


class LogoutSchema(ma.Schema):
    refresh_token = ma.fields.String(
        metadata={"description": "Revoked with the access token when given"}
    )


def check_password(username: str, password: str) -> User:
    """The user these credentials sign in; an unknown user, a wrong password and a disabled
    account get the same answer, after the same (slow) hash check."""
    user = db.session.execute(sa.select(User).filter_by(username=username)).scalar()
    valid = verify_password(user.password_hash if user else None, password)
    if user is None or not valid or user.disabled:
        raise Unauthorized("wrong username or password")
    return user


def _tokens(subject: str, *, refresh: bool, claims: dict[str, str] | None = None) -> dict[str, Any]:
    expires = current_app.config["JWT_ACCESS_TOKEN_EXPIRES"]
    body: dict[str, Any] = {
        "access_token": create_access_token(identity=subject, additional_claims=claims),
        "token_type": "Bearer",
        "expires_in": int(expires.total_seconds()),
    }
    if refresh:
        body["refresh_token"] = create_refresh_token(identity=subject)
    return body


@blp.route("/token")
class Token(MethodView):
    @public
    @blp.arguments(LoginSchema, location="json", required=False)
    @blp.response(200, TokenSchema)
    @blp.alt_response(401, schema=ErrorSchema, description="Wrong username or password")
    @blp.alt_response(429, schema=ErrorSchema, description="Too many attempts")
    @blp.doc(security=[{}, {"apiKey": []}])
    def post(self, login: dict[str, str] | None) -> dict[str, Any]:
        """Get tokens

        With a username and password: an access and a refresh token. With an `X-API-Key`
        header and no body: an access token carrying the key's role, scopes and limits.
        An unknown user and a wrong password get the same answer.
        """
        if not login:
            if not request.headers.get("X-API-Key"):
                raise Unauthorized("send a username and password, or an X-API-Key header")
            principal = authenticate()
            prefix, _ = split_api_key(request.headers["X-API-Key"]) or ("", "")
            return _tokens(f"key:{principal.id}", refresh=False, claims={KEY_PREFIX_CLAIM: prefix})
        if "username" not in login or "password" not in login:
            raise Unauthorized("send both a username and a password")
        user = check_password(login["username"], login["password"])
        return _tokens(f"user:{user.id}", refresh=True)


@blp.route("/refresh")
class Refresh(MethodView):
    # Public to the access-token gate: this view checks the refresh token itself.
    @public
    @blp.response(200, TokenSchema)
    @blp.alt_response(401, schema=ErrorSchema)
    @blp.doc(security=[{"bearerAuth": []}])
    def post(self) -> dict[str, Any]:
        """Refresh

        Send the refresh token as the bearer token; get a new access token.
        """
        verify_jwt_in_request(refresh=True)
        subject = get_jwt()["sub"]
        principal_from_subject(subject)  # a disabled user cannot refresh
        return _tokens(str(subject), refresh=False)


@blp.route("/logout")
class Logout(MethodView):
    @requires("authenticated")
    @blp.arguments(LogoutSchema, location="json", required=False)
    @blp.response(204)
    @blp.alt_response(401, schema=ErrorSchema)
    def post(self, body: dict[str, str] | None) -> None:
        """Sign out

        Revokes the access token used for this call and, if given, the refresh token. The
        revocation is stored in the database: every worker and replica refuses them at once.
        """
        if request.headers.get("X-API-Key"):
            raise BadRequest("API keys are revoked through /api/keys, not signed out")
        tokens = [get_jwt()]
        if body and body.get("refresh_token"):
            try:
                claims = decode_token(body["refresh_token"])
            except InvalidTokenError as err:
                raise Unauthorized("the refresh token is invalid") from err
            if claims.get("sub") != get_jwt().get("sub"):
                raise Forbidden("the refresh token belongs to someone else")
            tokens.append(claims)
        revoke_and_commit(*tokens)
