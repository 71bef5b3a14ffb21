"""Database URLs shown to people: the password masked, whether or not the URL parses."""

from __future__ import annotations

import re

# user:password@ in a URL that does not parse; the password may hold "/" or ":" but not "@"
_PASSWORD_IN_URL = re.compile(r"(://[^:/@\s]*:)[^@\s]*(@)")


def hide_password(url: str) -> str:
    """A database URL with its password (if any) replaced by ***, also when it does not parse."""
    from sqlalchemy.engine import make_url  # only here: reading settings stays light
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return _PASSWORD_IN_URL.sub(r"\1***\2", url)
    return parsed.render_as_string(hide_password=True) if parsed.password is not None else url
