"""Roles, permissions, scopes, password hashing and API key secrets."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

ROLES = ("viewer", "predictor", "deployer", "admin")

# What each role may do. "infer" is further limited by scopes (infer:<model> or infer:*).
PERMISSIONS: dict[str, frozenset[str]] = {
    "viewer": frozenset({"models:read"}),
    "predictor": frozenset({"models:read", "infer"}),
    "deployer": frozenset({"models:read", "infer", "deploy"}),
    "admin": frozenset({"models:read", "infer", "deploy", "admin"}),
}

_hasher = PasswordHasher()
# Verified against when the user does not exist, so an unknown user costs the same time as a
# wrong password and the two cannot be told apart.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))

KEY_PREFIX = "mg"


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def validate_scopes(scopes: list[str]) -> list[str]:
    """Scopes are ``infer:*`` or ``infer:<model>``; raises ValueError for anything else."""
    for scope in scopes:
        kind, _, target = scope.partition(":")
        if kind != "infer" or not target or any(c.isspace() for c in target):
            raise ValueError(f"invalid scope '{scope}' (use infer:* or infer:<model>)")
    return scopes


@dataclass(frozen=True)
class Principal:
    """Who is calling: a user (through a JWT) or an application (through an API key)."""

    kind: str  # "user" or "key"
    id: int
    name: str
    role: str
    scopes: tuple[str, ...]
    rate_limit: str | None = None
    daily_quota: int | None = None

    def can(self, permission: str) -> bool:
        if permission == "authenticated":
            return True
        return permission in PERMISSIONS.get(self.role, frozenset())

    def may_infer(self, model: str) -> bool:
        if not self.can("infer"):
            return False
        if self.role == "admin":
            return True
        return "infer:*" in self.scopes or f"infer:{model}" in self.scopes

    @property
    def limit_key(self) -> str:
        return f"{self.kind}:{self.id}"


@dataclass(frozen=True)
class NewKey:
    prefix: str
    secret: str
    secret_hash: str

    @property
    def token(self) -> str:
        """What the client sends in ``X-API-Key``; shown once."""
        return f"{KEY_PREFIX}_{self.prefix}_{self.secret}"


def new_api_key() -> NewKey:
    secret = secrets.token_urlsafe(32)
    return NewKey(prefix=secrets.token_hex(6), secret=secret, secret_hash=hash_secret(secret))


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def split_api_key(token: str) -> tuple[str, str] | None:
    parts = token.split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_PREFIX or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


def secret_matches(secret: str, secret_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(secret), secret_hash)
