"""Moderator accounts: argon2 password hashes, roles, activation."""

from __future__ import annotations

import re
from datetime import datetime

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from models.db import flush_unless_taken
from models.entities import Moderator, Role

# The address a browser's e-mail field accepts (the HTML standard's "valid e-mail address", with a dot in the
# domain): the dashboard's form is checked here too, since a hand-made request skips the browser's check.
EMAIL_RE = re.compile(
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$"
)
MIN_PASSWORD_LENGTH = 10
_hasher = PasswordHasher()
# Verifying against this when the e-mail is unknown keeps the timing of "no such user" and "wrong password" alike.
_DUMMY_HASH = _hasher.hash("not-a-real-password")


# A moderator's verdict is recorded as decided by "moderator:<address>" in a column of 320 characters.
MAX_EMAIL_CHARS = 310


class AccountError(ValueError):
    """A moderator account request that cannot be carried out."""


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AccountError(f"the password must have at least {MIN_PASSWORD_LENGTH} characters")
    return _hasher.hash(password)


def find_moderator(session: Session, email: str) -> Moderator | None:
    if "\x00" in email:  # no address holds one, and PostgreSQL text cannot be compared with it
        return None
    return session.scalar(select(Moderator).where(func.lower(Moderator.email) == email.strip().lower()))


def active_admin_count(session: Session) -> int:
    """How many accounts can open the admin pages now (none: only the command line can add or activate one)."""
    count = select(func.count()).where(Moderator.role == Role.ADMIN, Moderator.is_active.is_(True))
    return int(session.scalar(count) or 0)


def account_email(email: str) -> str:
    """The address a new account is kept under (trimmed, lower case), or AccountError saying why it cannot be
    one: a caller checks it before asking for a password, which is wasted on an address refused after it."""
    email = email.strip().lower()
    # The length first: the other refusal quotes the address, and a page or a terminal would show all of it.
    if len(email) > MAX_EMAIL_CHARS:
        raise AccountError(f"an e-mail address can have at most {MAX_EMAIL_CHARS} characters here")
    if not EMAIL_RE.match(email):
        raise AccountError(f"{email!r} is not an e-mail address")
    return email


def create_moderator(session: Session, email: str, password: str, role: str, now: datetime) -> Moderator:
    email = account_email(email)
    if role not in (Role.MODERATOR, Role.ADMIN):
        raise AccountError("role must be moderator or admin")
    if find_moderator(session, email) is not None:
        raise AccountError(f"a moderator {email} already exists")
    moderator = Moderator(email=email, password_hash=hash_password(password), role=role, created_at=now)
    session.add(moderator)
    flush_unless_taken(session, AccountError(f"a moderator {email} already exists"))  # added by another admin
    return moderator


def set_password(moderator: Moderator, password: str) -> None:
    """A new password; the account's existing dashboard sessions end with it (Moderator rotates its token)."""
    moderator.password_hash = hash_password(password)


def authenticate(session: Session, email: str, password: str, now: datetime) -> Moderator | None:
    """The active moderator with this e-mail and password, or None; rehashes when argon2's parameters change."""
    moderator = find_moderator(session, email)
    if moderator is None or not moderator.is_active:
        _verify(_DUMMY_HASH, password)
        return None
    if not _verify(moderator.password_hash, password):
        return None
    if _hasher.check_needs_rehash(moderator.password_hash):
        moderator.password_hash = _hasher.hash(password)
    moderator.last_login_at = now
    return moderator


def has_password(moderator: Moderator, password: str) -> bool:
    """Whether this is the account's password (inactive or not; nothing is recorded)."""
    return _verify(moderator.password_hash, password)


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False
