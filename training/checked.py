"""Training configs checked by pydantic, as settings are, with errors in ConfigError's words."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from training.errors import ConfigError


class CheckedConfig(BaseModel):
    """A config whose fields pydantic checks on creation; a bad value raises ConfigError naming
    the field, what is wrong and the value given."""

    model_config = ConfigDict(extra="forbid", strict=True)

    def __init__(self, **data: Any) -> None:
        """Validate `data`; ConfigError (not pydantic's ValidationError) when a value is bad."""
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise config_error(exc) from None


def config_error(exc: ValidationError) -> ConfigError:
    """One ConfigError for all of a validation's errors: 'field: what is wrong (got value)'."""
    lines = []
    for err in exc.errors():
        field = ".".join(str(part) for part in err["loc"] if not isinstance(part, int)) or "config"
        if err["type"] == "extra_forbidden":
            lines.append(f"{field}: unknown training setting")
            continue
        lines.append(f"{field}: {_message(err)} (got {err['input']!r})")
    return ConfigError("; ".join(dict.fromkeys(lines)))


def _message(err: Mapping[str, Any]) -> str:
    """What is wrong, in the words the CLI's users read (not pydantic's 'Input should be ...')."""
    kind, ctx = err["type"], err.get("ctx") or {}
    if kind == "greater_than_equal":
        return "must be 0 or more" if ctx["ge"] == 0 else f"must be at least {ctx['ge']}"
    if kind == "greater_than":
        return f"must be greater than {ctx['gt']}"
    if kind == "less_than":
        return f"must be less than {ctx['lt']}"
    if kind == "less_than_equal":
        return f"must be at most {ctx['le']}"
    if kind in ("int_type", "int_from_float", "int_parsing"):
        return "must be a whole number"
    if kind in ("float_type", "float_parsing", "finite_number"):
        return "must be a number"
    if kind in ("bool_type", "bool_parsing"):
        return "must be true or false"
    if kind in ("string_type", "string_too_short"):
        return "must be a non-empty text" if kind == "string_too_short" else "must be a text"
    if kind == "literal_error":
        return f"must be one of {ctx['expected']}"
    if kind == "value_error":
        return str(ctx.get("error", err["msg"]))
    return str(err["msg"])
