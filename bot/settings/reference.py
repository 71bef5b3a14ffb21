"""docs/configuration.md, written from the schema: every section and key, its type, default and
environment variable.

Regenerate with `make config-docs` (`python -m bot.settings.reference > docs/configuration.md`).
"""

from __future__ import annotations

import json
import sys
import types
from typing import Any, Literal, Union, get_args, get_origin

from annotated_types import Ge, Gt, Le, Lt, MaxLen, MinLen
from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo

from bot.settings.environment import ENV_DELIMITER, ENV_PREFIX, env_name, is_section
from bot.settings.example import default_value
from bot.settings.schema import Settings

COMMAND = "make config-docs"

HEADER = f"""\
# Configuration

<!-- Generated from the settings schema (bot/settings/) by `{COMMAND}`; do not edit by hand:
change the descriptions in bot/settings/ and regenerate. tests/test_configuration_docs.py
checks that this file matches the schema. -->

supportbot reads its settings from `supportbot.yaml` in the working directory (or the file
given with `--config` or `SUPPORTBOT_CONFIG`), then from environment variables, which win over
the file; keys left out keep their defaults. `supportbot config show` prints the settings in
effect, `supportbot config example` an example file with every key (supportbot.example.yaml).

- Relative paths in the file are taken relative to the file's folder.
- Every key has an environment variable, `{ENV_PREFIX}<SECTION>{ENV_DELIMITER}<KEY>` (nested
  sections add another `{ENV_DELIMITER}<KEY>`), for example `SUPPORTBOT_RETRIEVAL__TOP_K=3`. Lists
  take commas or a JSON array (`SUPPORTBOT_DIALOGUE__HANDOFF_KEYWORDS="human,agent"`); a whole
  section takes a JSON object (`SUPPORTBOT_MODEL__GENERATION='{{"temperature": 0.7}}'`).
- Secrets (`model.openai.api_key`, `web.secret`, `telegram.token`) are better set in the
  environment than in the file.
- A wrong value or an unknown key stops the start with a message that names the key, the value
  and where it came from (file and line, or the variable).
"""


def configuration_markdown() -> str:
    """The whole of docs/configuration.md for the current schema."""
    sections: list[tuple[tuple[str, ...], type[BaseModel]]] = []
    _collect(Settings, (), sections)
    lines = [HEADER, "## Sections", ""]
    lines += [f"- [`{'.'.join(loc)}`](#{'-'.join(loc)}): {_doc(model)}" for loc, model in sections]
    for loc, model in sections:
        lines += ["", f'<a id="{"-".join(loc)}"></a>', "", f"## `{'.'.join(loc)}`", "",
                  _doc(model), "", f"The whole section as one JSON object: `{env_name(loc)}`."]
        for name, field in model.model_fields.items():
            if not is_section(field):
                lines += ["", *_key((*loc, name), field)]
    return "\n".join(lines) + "\n"


def _collect(model: type[BaseModel], loc: tuple[str, ...],
             out: list[tuple[tuple[str, ...], type[BaseModel]]]) -> None:
    """Every section under `model`, depth first, in the schema's order."""
    for name, field in model.model_fields.items():
        if is_section(field):
            section: type[BaseModel] = field.annotation  # type: ignore[assignment]
            out.append(((*loc, name), section))
            _collect(section, (*loc, name), out)


def _doc(model: type[BaseModel]) -> str:
    return " ".join((model.__doc__ or "").split())


def _key(loc: tuple[str, ...], field: FieldInfo) -> list[str]:
    """One key's entry: heading, description, then type, default and variable."""
    limits = _limits(field)
    return [f"### `{'.'.join(loc)}`", "", " ".join((field.description or "").split()), "",
            f"- Type: {_type(field.annotation)}" + (f" ({limits})" if limits else ""),
            f"- Default: {_default(field)}",
            f"- Environment: `{env_name(loc)}`"]


def _type(annotation: Any) -> str:
    """A type as a reader would say it: 'integer', 'one of `a`, `b`', 'list of string'."""
    origin = get_origin(annotation)
    if origin is Literal:
        return "one of " + ", ".join(f"`{value}`" for value in get_args(annotation))
    if origin is list:
        item = get_args(annotation)[0]
        if get_origin(item) is Literal:
            return "list of any of " + ", ".join(f"`{value}`" for value in get_args(item))
        return "list of " + _type(item)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        named = " or ".join(_type(a) for a in args)
        return f"{named}, or null" if len(args) < len(get_args(annotation)) else named
    names = {str: "string", int: "integer", float: "number", bool: "true or false",
             SecretStr: "secret string"}
    if annotation in names:
        return names[annotation]
    return "path" if getattr(annotation, "__name__", "") in ("Path", "PosixPath") else str(
        annotation)


def _limits(field: FieldInfo) -> str:
    """The field's constraints, such as '>= 1, <= 50' or 'at least 1 character'."""
    parts = []
    for item in field.metadata:
        if isinstance(item, Ge):
            parts.append(f">= {item.ge}")
        elif isinstance(item, Gt):
            parts.append(f"> {item.gt}")
        elif isinstance(item, Le):
            parts.append(f"<= {item.le}")
        elif isinstance(item, Lt):
            parts.append(f"< {item.lt}")
        elif isinstance(item, MinLen):
            parts.append(f"at least {item.min_length} character"
                         + ("s" if item.min_length != 1 else ""))
        elif isinstance(item, MaxLen):
            parts.append(f"at most {item.max_length} characters")
        elif getattr(item, "pattern", None):
            parts.append(f"matching `{item.pattern}`")
    return ", ".join(parts)


def _default(field: FieldInfo) -> str:
    value = default_value(field)
    if value is None:
        return "unset (null)"
    text = json.dumps(value, ensure_ascii=False)
    fence = "``" if "`" in text else "`"
    return f"{fence}{text}{fence}"


if __name__ == "__main__":
    sys.stdout.write(configuration_markdown())
