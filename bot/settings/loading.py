"""Settings from a YAML file: relative paths resolved, errors naming key, line and source."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from bot.errors import SettingsError
from bot.settings.environment import env_name, env_names_for
from bot.settings.schema import Settings
from bot.settings.urls import hide_password
from bot.shared.textfile import TextFileError, read_text

DEFAULT_CONFIG = Path("supportbot.yaml")


def load_settings(path: Path | None = None, explicit: bool = False) -> Settings:
    """Read settings from a YAML file (if it exists) and the environment.

    With `explicit`, a missing file is an error (the user named it); otherwise defaults apply.
    Relative paths in the file are taken relative to the file's folder.
    """
    path = path or DEFAULT_CONFIG
    text, data = "", {}
    if path.is_file():
        text = _read_text(path)
        data = _parse_yaml(path, text)
        _resolve_relative(data, path.parent)
    elif explicit:
        raise SettingsError([f"settings file {path} not found"], path)
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise SettingsError([_describe(err, path, text, data) for err in exc.errors()],
                            path if text else None) from exc


def _read_text(path: Path) -> str:
    """The file as text: UTF-8, with or without a byte-order mark."""
    try:
        return read_text(path)
    except TextFileError as exc:
        where = f"line {exc.line}: " if exc.line is not None else ""
        raise SettingsError([where + exc.message], path) from exc


def _parse_yaml(path: Path, text: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        raise SettingsError([f"{where}invalid YAML: {getattr(exc, 'problem', exc)}"], path) from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SettingsError(["the file must hold a mapping of sections (persona, model, ...)"],
                            path)
    return data


def _resolve_relative(data: dict[str, Any], base: Path) -> None:
    """Make relative paths in the file relative to the file's folder, not the working directory."""
    for section, key in (("retrieval", "faq_path"), ("retrieval", "index_dir"),
                         ("model", "adapter"), ("model", "cache_dir"),
                         ("telegram", "state_file"), ("safety", "detector_path"),
                         ("web", "secret_file")):
        value = data.get(section, {}).get(key) if isinstance(data.get(section), dict) else None
        if isinstance(value, str) and value and not Path(value).expanduser().is_absolute():
            data[section][key] = str(base / value)
    storage = data.get("storage")
    if not isinstance(storage, dict):
        return
    url = storage.get("database_url")
    if isinstance(url, str) and url.startswith("sqlite") and ":///" in url:
        head, file = url.split(":///", 1)
        if file and not file.startswith("/") and not file.startswith(":memory:"):
            storage["database_url"] = f"{head}:///{base.resolve() / file}"


def _describe(err: Mapping[str, Any], path: Path, text: str, data: dict[str, Any]) -> str:
    """One line per validation error: dotted key, message, value, and where it came from."""
    loc = [str(part) for part in err["loc"]]
    key = ".".join(loc)
    message = str(err["msg"]).removeprefix("Value error, ")
    value = f" (got {err['input']!r})" if err["type"] != "missing" and not isinstance(
        err.get("input"), dict) else ""
    env_names = env_names_for(loc, Settings)
    sources = []
    if env_names:
        plural = "s" if len(env_names) > 1 else ""
        sources.append(f"environment variable{plural} {', '.join(env_names)}")
    exact = env_name(loc) in {n.upper() for n in env_names}
    if not exact and _in_file(data, loc):
        line = _yaml_line(text, loc)
        sources.append(f"{path}" + (f", line {line}" if line else ""))
    source = "; ".join(sources) or "defaults"
    if err["type"] == "extra_forbidden":
        message = "unknown setting (check the spelling; `supportbot config show` lists them)"
        value = ""
    return f"{key}: {message}{value} [{source}]"


def _in_file(data: Mapping[str, Any], loc: list[str]) -> bool:
    node: Any = data
    for part in loc:
        if not isinstance(node, Mapping) or part not in node:
            return False
        node = node[part]
    return True


def _yaml_line(text: str, loc: list[str]) -> int | None:
    """The 1-based line of the key at `loc` in the YAML text, if it can be found."""
    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return None
    line = None
    for part in loc:
        if not isinstance(node, yaml.MappingNode):
            return line
        for key_node, value_node in node.value:
            if str(key_node.value) == part:
                line, node = key_node.start_mark.line + 1, value_node
                break
        else:
            return line
    return line


def settings_to_yaml(settings: Settings, hide_passwords: bool = True) -> str:
    """The effective settings as YAML, in the same shape as supportbot.yaml.

    With `hide_passwords` (the default), a password in storage.database_url shows as ***.
    """
    data = settings.model_dump(mode="json")
    if hide_passwords:
        data["storage"]["database_url"] = hide_password(data["storage"]["database_url"])
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)
