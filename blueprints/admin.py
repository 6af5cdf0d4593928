"""Administration: users and API keys (role admin)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import marshmallow as ma
import sqlalchemy as sa
from flask import g
from flask.views import MethodView
from flask_smorest import Blueprint
from limits import parse as parse_limit

from accounts.auth import requires
from accounts.models import ApiKey, User, utcnow
from accounts.security import ROLES, hash_password, new_api_key, validate_scopes
from blueprints.errors import Conflict, ErrorSchema, NotFound
from blueprints.schemas import UtcDateTime
from extensions import db

blp = Blueprint("admin", __name__, url_prefix="/api", description="Users and API keys (admin).")


def _scopes(value: list[str]) -> None:
    try:
        validate_scopes(value)
    except ValueError as err:
        raise ma.ValidationError(str(err)) from err


def _rate_limit(value: str) -> None:
    try:
        parse_limit(value)
    except ValueError as err:
        raise ma.ValidationError("use a limit like '100 per minute' or '10/second'") from err


class _Scopes(ma.fields.List):
    """A list of scopes in JSON, stored space-separated."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(ma.fields.String(), validate=_scopes, **kwargs)

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> Any:
        return value.split() if isinstance(value, str) else value


class UserSchema(ma.Schema):
    id = ma.fields.Integer(dump_only=True)
    username = ma.fields.String(
        required=True, validate=ma.validate.Regexp(r"^[A-Za-z0-9._-]{1,64}$")
    )
    role = ma.fields.String(required=True, validate=ma.validate.OneOf(ROLES))
    scopes = _Scopes()
    disabled = ma.fields.Boolean(dump_only=True)
    created_at = UtcDateTime(dump_only=True)


class NewUserSchema(UserSchema):
    password = ma.fields.String(
        required=True, load_only=True, validate=ma.validate.Length(12, 1024)
    )


class UserUpdateSchema(ma.Schema):
    role = ma.fields.String(validate=ma.validate.OneOf(ROLES))
    scopes = _Scopes()
    disabled = ma.fields.Boolean()
    password = ma.fields.String(load_only=True, validate=ma.validate.Length(12, 1024))


class KeySchema(ma.Schema):
    id = ma.fields.Integer(dump_only=True)
    name = ma.fields.String(required=True, validate=ma.validate.Length(1, 64))
    role = ma.fields.String(
        load_default="predictor", validate=ma.validate.OneOf(("viewer", "predictor"))
    )
    scopes = _Scopes(load_default=lambda: ["infer:*"])
    rate_limit = ma.fields.String(allow_none=True, load_default=None, validate=_rate_limit)
    daily_quota = ma.fields.Integer(
        allow_none=True, load_default=None, validate=ma.validate.Range(1)
    )
    prefix = ma.fields.String(dump_only=True)
    created_by = ma.fields.String(dump_only=True)
    created_at = UtcDateTime(dump_only=True)
    revoked_at = UtcDateTime(dump_only=True, allow_none=True)
    usage = ma.fields.Method("_usage", dump_only=True)

    def _usage(self, key: ApiKey) -> dict[str, Any]:
        last = UtcDateTime()._serialize(key.last_used_at, None, key)
        return {
            "requests": key.requests,
            "items": key.items,
            "errors": key.errors,
            "last_used_at": last,
        }


class NewKeySchema(KeySchema):
    key = ma.fields.String(dump_only=True, metadata={"description": "Shown once: store it now"})


@dataclass
class CreatedKey:
    """A key record with its secret, for the one answer that shows the secret."""

    record: ApiKey
    key: str

    def __getattr__(self, name: str) -> Any:
        return getattr(self.record, name)


def _user_dump(user: User) -> dict[str, Any]:
    return {
        "id": user.id,
        "username": user.username,
        "role": user.role,
        "scopes": user.scopes.split(),
        "disabled": user.disabled,
        "created_at": user.created_at,
    }


def _key(key_id: int) -> ApiKey:
    key = db.session.get(ApiKey, key_id)
    if key is None:
        raise NotFound(f"no API key {key_id}")
    return key


@blp.route("/users")
class Users(MethodView):
    @requires("admin")
    @blp.response(200, UserSchema(many=True))
    def get(self) -> list[dict[str, Any]]:
        """List users"""
        return [_user_dump(u) for u in db.session.scalars(sa.select(User).order_by(User.id))]

    @requires("admin")
    @blp.arguments(NewUserSchema)
    @blp.response(201, UserSchema)
    @blp.alt_response(409, schema=ErrorSchema, description="The username is taken")
    def post(self, data: dict[str, Any]) -> dict[str, Any]:
        """Create a user"""
        if db.session.scalar(sa.select(User).filter_by(username=data["username"])):
            raise Conflict(f"the username '{data['username']}' is taken")
        user = User(
            username=data["username"],
            role=data["role"],
            scopes=" ".join(data.get("scopes", ["infer:*"])),
            password_hash=hash_password(data["password"]),
        )
        db.session.add(user)
        db.session.commit()
        return _user_dump(user)


@blp.route("/users/<int:user_id>")
class UserDetail(MethodView):
    @requires("admin")
    @blp.arguments(UserUpdateSchema)
    @blp.response(200, UserSchema)
    @blp.alt_response(404, schema=ErrorSchema)
    def patch(self, data: dict[str, Any], user_id: int) -> dict[str, Any]:
        """Change a user's role, scopes or password, or disable them

        A new password ends every token issued before it, on every worker and replica.
        A disabled user's tokens stop working on every worker and replica at once.
        """
        user = db.session.get(User, user_id)
        if user is None:
            raise NotFound(f"no user {user_id}")
        if "role" in data:
            user.role = data["role"]
        if "scopes" in data:
            user.scopes = " ".join(data["scopes"])
        if "disabled" in data:
            user.disabled = data["disabled"]
        if "password" in data:
            user.password_hash = hash_password(data["password"])
            user.tokens_valid_after = utcnow()
        db.session.commit()
        return _user_dump(user)


@blp.route("/keys")
class Keys(MethodView):
    @requires("admin")
    @blp.response(200, KeySchema(many=True))
    def get(self) -> list[ApiKey]:
        """List API keys, with usage (never the secret)"""
        return list(db.session.scalars(sa.select(ApiKey).order_by(ApiKey.id)))

    @requires("admin")
    @blp.arguments(KeySchema)
    @blp.response(201, NewKeySchema)
    def post(self, data: dict[str, Any]) -> CreatedKey:
        """Create an API key

        The answer holds the key itself, once; only a hash of it is stored. Clients send it
        as `X-API-Key` or exchange it for a token at `POST /auth/token`.
        """
        new = new_api_key()
        key = ApiKey(
            name=data["name"],
            role=data["role"],
            scopes=" ".join(data["scopes"]),
            rate_limit=data["rate_limit"],
            daily_quota=data["daily_quota"],
            prefix=new.prefix,
            secret_hash=new.secret_hash,
            created_by=g.principal.name,
        )
        db.session.add(key)
        db.session.commit()
        return CreatedKey(key, new.token)


@blp.route("/keys/<int:key_id>")
class KeyDetail(MethodView):
    @requires("admin")
    @blp.response(200, KeySchema)
    @blp.alt_response(404, schema=ErrorSchema)
    def get(self, key_id: int) -> ApiKey:
        """An API key and its usage"""
        return _key(key_id)

    @requires("admin")
    @blp.response(204)
    @blp.alt_response(404, schema=ErrorSchema)
    def delete(self, key_id: int) -> None:
        """Revoke an API key (at once, on every worker and replica)"""
        key = _key(key_id)
        key.revoked_at = key.revoked_at or utcnow()
        db.session.commit()


@blp.route("/keys/<int:key_id>/rotate")
class KeyRotate(MethodView):
    @requires("admin")
    @blp.response(200, NewKeySchema)
    @blp.alt_response(404, schema=ErrorSchema)
    @blp.alt_response(409, schema=ErrorSchema, description="The key is revoked")
    def post(self, key_id: int) -> CreatedKey:
        """Rotate an API key: a new secret, same name, scopes, limits and usage

        The old secret stops working at once.
        """
        key = _key(key_id)
        if key.revoked_at is not None:
            raise Conflict("a revoked key cannot be rotated")
        new = new_api_key()
        key.prefix, key.secret_hash = new.prefix, new.secret_hash
        db.session.commit()
        return CreatedKey(key, new.token)
