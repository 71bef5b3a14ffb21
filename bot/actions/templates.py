"""The actions' templates: `${ENV}` and `{slot}` in a call, `{field.path}` in a reply.

`${NAME}` is read from an environment mapping at call time, never at load time, so secrets stay
out of files, logs, errors and reprs (an error names the variable, never a value). In a URL a
`{slot}` is percent-encoded as one path segment; in headers and a JSON body it is the plain
value. A reply takes `{slot}` from the slots and any other `{a.b.0}` from the JSON response;
a missing field, or one that is a dict or a list, raises `MissingField`: never an empty
sentence. `{{`, `}}` and `$$` are a literal `{`, `}` and `$`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from bot.actions.model import Action

_TOKEN = re.compile(r"\{\{|\}\}|\$\$|\$\{([^{}]*)\}|\{([^{}]*)\}|[{}]")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)*")
MAX_FIELD_CHARS = 300
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u200b-\u200f\u202a-\u202e\u2066-\u2069]")


class TemplateSyntaxError(ValueError):
    """A template is malformed (a stray brace, an empty placeholder)."""


class MissingField(LookupError):
    """A reply names a response field that is absent, null, or not a plain value."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"the response has no plain value at '{name}'")


class MissingEnv(LookupError):
    """A call names an environment variable that is not set; the message names only it."""

    def __init__(self, name: str, reason: str = "is not set") -> None:
        self.name = name
        super().__init__(f"environment variable {name} {reason}")


@dataclass(frozen=True)
class Part:
    """One piece of a parsed template: literal text, an `${ENV}` or a `{name}`."""

    kind: str  # "text", "env" or "name"
    value: str


def parse(template: str) -> list[Part]:
    """The template's parts; TemplateSyntaxError on a stray brace or an empty placeholder."""
    parts: list[Part] = []
    position = 0
    for match in _TOKEN.finditer(template):
        if match.start() > position:
            parts.append(Part("text", template[position:match.start()]))
        token = match.group(0)
        if token in ("{{", "}}", "$$"):
            parts.append(Part("text", token[0]))
        elif match.group(1) is not None:
            name = match.group(1).strip()
            if not name:
                raise TemplateSyntaxError("empty ${} (write $$ for a literal $)")
            parts.append(Part("env", name))
        elif match.group(2) is not None:
            name = match.group(2).strip()
            if not name:
                raise TemplateSyntaxError("empty {} (write {{ and }} for literal braces)")
            parts.append(Part("name", name))
        else:
            raise TemplateSyntaxError(
                f"a single '{token}' (write {token}{token} for a literal brace)")
        position = match.end()
    if position < len(template):
        parts.append(Part("text", template[position:]))
    return parts


def names(template: str, kind: str) -> Iterator[str]:
    """The `name`s (`{x}`) or `env`s (`${X}`) a template uses, in order."""
    return (part.value for part in parse(template) if part.kind == kind)


def _env(name: str, environ: Mapping[str, str]) -> str:
    value = environ.get(name)
    if value is None or value == "":
        raise MissingEnv(name)
    if _CONTROL.search(value):
        raise MissingEnv(name, "holds control characters")
    return value


def render_url(template: str, values: Mapping[str, str], environ: Mapping[str, str]) -> str:
    """The URL: `${ENV}` as is, each `{slot}` percent-encoded as one segment (`/` too)."""
    out = []
    for part in parse(template):
        if part.kind == "text":
            out.append(part.value)
        elif part.kind == "env":
            out.append(_env(part.value, environ))
        else:
            out.append(quote(values[part.value], safe=""))
    return "".join(out)


def render_plain(template: str, values: Mapping[str, str],
                 environ: Mapping[str, str] | None = None) -> str:
    """A header value, a body string or a confirmation: slots as is; `${ENV}` only if
    `environ` is given (headers), else a TemplateSyntaxError."""
    out = []
    for part in parse(template):
        if part.kind == "text":
            out.append(part.value)
        elif part.kind == "env":
            if environ is None:
                raise TemplateSyntaxError("${...} is only allowed in call.url and call.headers")
            out.append(_env(part.value, environ))
        else:
            out.append(values[part.value])
    return "".join(out)


def render_body(body: Any, values: Mapping[str, str]) -> Any:
    """The JSON body with every string leaf rendered as a template (keys stay as written)."""
    if isinstance(body, str):
        return render_plain(body, values)
    if isinstance(body, dict):
        return {key: render_body(value, values) for key, value in body.items()}
    if isinstance(body, list):
        return [render_body(value, values) for value in body]
    return body


def field_value(data: Any, path: str) -> str:
    """The plain value at a dotted path (`items.0.name`) of a JSON document, as shown text."""
    node = data
    for step in path.split("."):
        if isinstance(node, dict) and step in node:
            node = node[step]
        elif isinstance(node, list) and step.isdigit() and int(step) < len(node):
            node = node[int(step)]
        else:
            raise MissingField(path)
    if isinstance(node, bool):
        text = "yes" if node else "no"
    elif isinstance(node, (str, int, float)):
        text = str(node)
    else:
        raise MissingField(path)
    text = _CONTROL.sub("", text).strip()
    if not text:
        raise MissingField(path)
    if len(text) > MAX_FIELD_CHARS:
        text = text[:MAX_FIELD_CHARS - 1].rstrip() + "…"
    return text


def render_text(template: str, values: Mapping[str, str], data: Any = None) -> str:
    """A reply template: `{slot}` from the slots, any other `{field}` from the response."""
    out = []
    for part in parse(template):
        if part.kind == "text":
            out.append(part.value)
        elif part.kind == "name" and part.value in values:
            out.append(values[part.value])
        elif part.kind == "name" and data is not None:
            out.append(field_value(data, part.value))
        else:
            raise MissingField(part.value)
    return "".join(out).strip()


def render_reply(action: Action, data: Any, values: Mapping[str, str]) -> str:
    """The action's reply to a successful call's JSON `data`; MissingField if it cannot."""
    reply = action.reply
    if reply.field is None:
        assert reply.text is not None
        return render_text(reply.text, values, data)
    value = field_value(data, reply.field)
    cases = dict(reply.cases)
    template = cases.get(value)
    if template is None:
        folded = {key.casefold(): text for key, text in reply.cases}
        template = folded.get(value.casefold(), reply.default)
    if template is None:
        raise MissingField(reply.field)
    return render_text(template, values, data)


def render_status(action: Action, status: int, values: Mapping[str, str]) -> str | None:
    """The action's `on_status` text for an HTTP status (slots only), or None."""
    template = action.on_status.get(status)
    return None if template is None else render_text(template, values)


def render_confirm(action: Action, values: Mapping[str, str]) -> str | None:
    """The question asked before a call that changes something, or None."""
    return None if action.confirm is None else render_text(action.confirm, values)
