"""Settings from the environment: SUPPORTBOT_<SECTION>__<KEY>=value, checked against the schema."""

from __future__ import annotations

import difflib
import json
import os
import warnings
from collections.abc import Mapping
from typing import Any, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from bot.errors import SettingsError, SettingsWarning

ENV_PREFIX = "SUPPORTBOT_"
ENV_DELIMITER = "__"
CONFIG_ENV = "SUPPORTBOT_CONFIG"  # read by the CLI (--config), not a setting
WORKER_ENV = "SUPPORTBOT_WORKER_SETTINGS"  # set by `serve --workers` for its workers, not a setting


def env_name(loc: tuple[str, ...] | list[str]) -> str:
    """The variable that sets the setting at `loc`, e.g. SUPPORTBOT_MODEL__THREADS."""
    return ENV_PREFIX + ENV_DELIMITER.join(loc).upper()


def is_section(field: FieldInfo) -> bool:
    """Whether a field holds a nested section (a model) rather than a value."""
    return isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)


def env_values(environ: Mapping[str, str], root: type[BaseModel]) -> dict[str, Any]:
    """Nested values for `root` (the Settings model) from SUPPORTBOT_* variables; warns about
    unknown names."""
    known = _env_targets(root)
    values: dict[str, Any] = {}
    # Whole sections (JSON objects) first, so that a variable for one key overrides them.
    for name in sorted(environ, key=lambda n: (n.count(ENV_DELIMITER), n)):
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper in (CONFIG_ENV, WORKER_ENV):
            continue
        if upper not in known:
            warnings.warn(_unknown_env_message(name, known), SettingsWarning, stacklevel=2)
            continue
        loc, field = known[upper]
        value = _env_value(name, environ[name], loc, field)
        node = values
        for part in loc[:-1]:
            node = node.setdefault(part, {})
        if isinstance(value, dict) and isinstance(node.get(loc[-1]), dict):
            node[loc[-1]].update(value)
        else:
            node[loc[-1]] = value
    return values


def _env_targets(root: type[BaseModel]) -> dict[str, tuple[tuple[str, ...], FieldInfo]]:
    """Every valid variable name (upper case) with the settings path and field it sets."""
    targets: dict[str, tuple[tuple[str, ...], FieldInfo]] = {}

    def walk(model: type[BaseModel], loc: tuple[str, ...]) -> None:
        for name, field in model.model_fields.items():
            here = (*loc, name)
            targets[env_name(here)] = (here, field)
            if is_section(field):
                walk(field.annotation, here)  # type: ignore[arg-type]

    walk(root, ())
    return targets


def _env_value(name: str, raw: str, loc: tuple[str, ...], field: FieldInfo) -> Any:
    """A variable's text as the value pydantic validates: JSON for sections, lists by commas."""
    key = ".".join(loc)
    if is_section(field):
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise SettingsError([f"{key}: not a JSON object ({exc.msg}, column {exc.colno}) "
                                 f"[environment variable {name}]"]) from exc
        if not isinstance(value, dict):
            raise SettingsError([f"{key}: expected a JSON object of keys "
                                 f"[environment variable {name}]"])
        return value
    if get_origin(field.annotation) is list:
        if not raw.lstrip().startswith("["):
            return [part.strip() for part in raw.split(",") if part.strip()]
        try:
            return json.loads(raw)
        except json.JSONDecodeError as exc:
            raise SettingsError([f"{key}: not a JSON list ({exc.msg}, column {exc.colno}); "
                                 "use a comma-separated list or a JSON array "
                                 f"[environment variable {name}]"]) from exc
    return raw


def _unknown_env_message(name: str, known: Mapping[str, object]) -> str:
    # Compared without the common prefix, which would make every name look alike.
    names = [n.removeprefix(ENV_PREFIX) for n in (*known, CONFIG_ENV)]
    close = difflib.get_close_matches(name.upper().removeprefix(ENV_PREFIX), names, n=1)
    hint = f"did you mean {ENV_PREFIX}{close[0]}?" if close else (
        f"settings are {ENV_PREFIX}<SECTION>{ENV_DELIMITER}<KEY>; "
        "`supportbot config show` lists them")
    return f"ignoring unknown environment variable {name}: {hint}"


def env_names_for(loc: list[str], root: type[BaseModel]) -> list[str]:
    """The variables set for `loc`, for a section holding it, or for keys inside it."""
    key = env_name(loc)
    known = _env_targets(root)
    found = []
    for name in os.environ:
        upper = name.upper()
        if upper in known and (upper == key or key.startswith(upper + ENV_DELIMITER)
                               or upper.startswith(key + ENV_DELIMITER)):
            found.append(name)
    return sorted(found)
