"""Operator passwords: argon2id hashes (argon2-cffi), never the password itself.

argon2id is memory-hard, so a stolen operators table is slow to attack; the library's defaults
(RFC 9106's low-memory profile) cost a few tens of milliseconds per login, which is fine for a
handful of operators.
"""

from __future__ import annotations

import functools
import re

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from bot.errors import InputError
from bot.storage.models import OPERATOR_NAME_LENGTH

_HASHER = PasswordHasher()
# Names appear in logs, the inbox and the customer's chat ("Anna"): printable, no markup.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._@-]*$")
MIN_PASSWORD = 8
MAX_PASSWORD = 1024  # hashing a megabyte per login attempt would be a cheap denial of service


@functools.cache
def _dummy_hash() -> str:
    """Verified against for unknown names, so a wrong name takes as long as a wrong password
    (made on first use: hashing costs time that importing should not)."""
    return _HASHER.hash("not any operator's password")


def check_name(name: str) -> str:
    """The name if an operator may have it, else InputError saying why."""
    if not 1 <= len(name) <= OPERATOR_NAME_LENGTH or not _NAME.match(name) \
            or name != name.strip():
        raise InputError(f"an operator name has 1 to {OPERATOR_NAME_LENGTH} letters, digits, "
                         "spaces or . _ @ -, starting with a letter or digit")
    return name


def check_password(password: str) -> str:
    """The password if it is long enough to set (and short enough to hash), else InputError."""
    if len(password) < MIN_PASSWORD:
        raise InputError(f"a password needs at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise InputError(f"a password has at most {MAX_PASSWORD} characters")
    return password


def hash_password(password: str) -> str:
    """An argon2id hash of a (checked) password, salt and parameters included."""
    return _HASHER.hash(check_password(password))


def verify_password(stored: str | None, password: str) -> bool:
    """Whether `password` matches the stored hash; with no hash (unknown name) it still
    spends the time of a check, and answers False."""
    if len(password) > MAX_PASSWORD:
        return False
    try:
        return _HASHER.verify(stored or _dummy_hash(), password) and stored is not None
    except (VerificationError, InvalidHashError):
        return False
