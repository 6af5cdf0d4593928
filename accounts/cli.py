"""`flask users ...`: manage users from the command line (no server needed)."""

from __future__ import annotations

import secrets

import click
import sqlalchemy as sa
from flask.cli import AppGroup

from accounts.models import User
from accounts.security import ROLES, hash_password
from extensions import db

users_cli = AppGroup("users", help="Create, list and disable users.")


@users_cli.command("create")
@click.argument("username")
@click.option("--role", type=click.Choice(ROLES), required=True)
@click.option("--scopes", default="infer:*", show_default=True, help="Space-separated scopes.")
@click.password_option(help="Prompted for when not given (at least 12 characters).")
def create_user(username: str, role: str, scopes: str, password: str) -> None:
    """Create USERNAME with a role and a password."""
    if len(password) < 12:
        raise click.UsageError("the password must have at least 12 characters")
    if db.session.scalar(sa.select(User).filter_by(username=username)):
        raise click.UsageError(f"the user '{username}' already exists")
    db.session.add(
        User(username=username, role=role, scopes=scopes, password_hash=hash_password(password))
    )
    db.session.commit()
    click.echo(f"created {role} '{username}'")


@users_cli.command("list")
def list_users() -> None:
    """List users and their roles."""
    for user in db.session.scalars(sa.select(User).order_by(User.id)):
        state = "disabled" if user.disabled else "active"
        click.echo(f"{user.id}\t{user.username}\t{user.role}\t{user.scopes}\t{state}")


@users_cli.command("disable")
@click.argument("username")
def disable_user(username: str) -> None:
    """Disable USERNAME: their tokens stop working at once, everywhere."""
    user = db.session.scalar(sa.select(User).filter_by(username=username))
    if user is None:
        raise click.UsageError(f"no user '{username}'")
    user.disabled = True
    db.session.commit()
    click.echo(f"disabled '{username}'")


@users_cli.command("bootstrap")
def bootstrap() -> None:
    """On an empty database, create an admin with a random password and print it once."""
    if db.session.scalar(sa.select(sa.func.count()).select_from(User)):
        return
    password = secrets.token_urlsafe(18)
    db.session.add(
        User(
            username="admin", role="admin", scopes="infer:*", password_hash=hash_password(password)
        )
    )
    db.session.commit()
    click.echo(
        "\n  Created the first user: admin / "
        + password
        + "\n  This password is shown once. Sign in with POST /auth/token.\n"
    )
