"""Reading actions from YAML (issue 34): `actions:` in the FAQ file or in a file of its own.

`load_actions(path)` checks everything it can before serving and raises `ActionFileError`
listing EVERY problem with its file, line and field: ids, questions, slots and their patterns,
the call's method, URL, headers, body and timeout, the replies, and every placeholder (a
`{name}` in a call or a confirmation must be a slot; `${NAME}` only in the URL and header
values). Environment variables are never read here: only their names are checked.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from bot.actions.model import METHODS, Action, Call, Reply, Slot
from bot.actions.templates import ENV_NAME, FIELD_NAME, TemplateSyntaxError, names, parse
from retrieval.corpus import YamlSyntax, open_text_file, yaml_with_lines
from retrieval.errors import CorpusError, CorpusProblem

__all__ = ["Action", "ActionFileError", "Call", "Reply", "Slot", "load_actions"]

ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}", re.IGNORECASE)
SLOT_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
ACTION_KEYS = ("id", "questions", "slots", "call", "confirm", "reply", "on_status", "on_error")
SLOT_KEYS = ("pattern", "ask", "invalid", "upper")
CALL_KEYS = ("method", "url", "headers", "body", "timeout_s")
REPLY_KEYS = ("field", "cases", "default")
DEFAULT_MAX_TIMEOUT_S = 10.0


class ActionFileError(CorpusError):
    """A file of actions is malformed; lists every problem with its file, line and field."""


def _plain(value: Any) -> Any:
    """A loaded YAML value without the loader's line bookkeeping."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if k not in ("__line__", "__lines__")}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


class _Checker:
    """Collects problems for one file; `at` remembers the line of the mapping being read."""

    def __init__(self, path: Path, max_timeout_s: float) -> None:
        self.path = path
        self.max_timeout_s = max_timeout_s
        self.problems: list[CorpusProblem] = []

    def problem(self, message: str, line: int | None, field: str | None) -> None:
        self.problems.append(CorpusProblem(self.path, message, line, field))

    def keys(self, raw: dict[str, Any], allowed: tuple[str, ...], where: str) -> None:
        for key in raw:
            if key in ("__line__", "__lines__") or key in allowed:
                continue
            self.problem(f"unknown field '{key}' (expected one of: {', '.join(allowed)})",
                         raw["__lines__"].get(str(key), raw["__line__"]), f"{where}{key}")

    def text(self, raw: dict[str, Any], key: str, where: str, required: bool = True
             ) -> str | None:
        """A non-empty string field, or None (a problem noted when required or malformed)."""
        line = raw["__lines__"].get(key, raw["__line__"])
        if key not in raw or raw[key] is None:
            if required:
                self.problem("missing (a non-empty text)", line, where + key)
            return None
        value = raw[key]
        if not isinstance(value, str) or not value.strip():
            self.problem(f"must be a non-empty text, got {value!r}", line, where + key)
            return None
        return value.strip()

    def template(self, template: str, line: int | None, field: str, slots: set[str],
                 env: bool = False, response: bool = False) -> None:
        """Check a template: braces, `${NAME}` only where `env`, names slots unless
        `response` (a reply, whose other names are response fields)."""
        try:
            parse(template)
        except TemplateSyntaxError as exc:
            self.problem(f"malformed template: {exc}", line, field)
            return
        for name in names(template, "env"):
            if not env:
                self.problem(f"${{{name}}}: environment variables are only allowed in "
                             "call.url and call.headers (write $$ for a literal $)", line, field)
            elif not ENV_NAME.fullmatch(name):
                self.problem(f"'${{{name}}}' is not an environment variable name", line, field)
        for name in names(template, "name"):
            if name in slots:
                continue
            if not response:
                known = ", ".join(sorted(slots)) or "none declared"
                self.problem(f"'{{{name}}}' is not a slot of this action (slots: {known})",
                             line, field)
            elif not FIELD_NAME.fullmatch(name):
                self.problem(f"'{{{name}}}' is not a response field path (like status or "
                             "items.0.name)", line, field)


def load_actions(path: Path | str, *, max_timeout_s: float = DEFAULT_MAX_TIMEOUT_S,
                 what: str = "actions") -> list[Action]:
    """The actions declared in a YAML file: the FAQ file (a mapping with `entries:` and
    `actions:`) or a file of its own (`actions:` only). A FAQ in .jsonl or .csv, a YAML list
    or a mapping without `actions:` declares none: []. ActionFileError lists every problem;
    `what` names the file when it is missing ("FAQ" when the actions are the FAQ file's)."""
    path = Path(path)
    if path.suffix.lower() in (".jsonl", ".csv"):
        return []
    readers: Mapping[str, Callable[[str], str]] = {".yaml": str, ".yml": str}
    _, text = open_text_file(path, what, readers, ".yaml or .yml", ActionFileError)
    checker = _Checker(path, max_timeout_s)
    items = _read(checker, text)
    actions = []
    seen: dict[str, int | None] = {}
    for number, raw in enumerate(items, 1):
        if not isinstance(raw, dict):
            checker.problem(f"action {number} must be a mapping, got {_plain(raw)!r}", None,
                            "actions")
            continue
        ident, line = raw.get("id"), raw["__lines__"].get("id", raw["__line__"])
        if isinstance(ident, str) and ident in seen:
            checker.problem(f"duplicate action id '{ident}' (first on line {seen[ident]})",
                            line, f"{ident}.id")
        elif isinstance(ident, str):
            seen[ident] = line
        action = _action(checker, raw, number)
        if action is not None:
            actions.append(action)
    if checker.problems:
        raise ActionFileError(checker.problems)
    return actions


def _read(checker: _Checker, text: str) -> list[Any]:
    """The raw `actions:` list of the file (problems noted)."""
    try:
        doc = yaml_with_lines(text)
    except YamlSyntax as bad:
        checker.problem(f"invalid YAML: {bad.reason}", bad.line, None)
        return []
    if not isinstance(doc, dict) or doc.get("actions") is None:
        return []
    items = doc["actions"]
    if not isinstance(items, list):
        checker.problem("expected a list of actions", doc["__lines__"].get("actions"),
                        "actions")
        return []
    return items


def _action(checker: _Checker, raw: dict[str, Any], number: int) -> Action | None:
    """One action from its raw mapping, or None when it has problems (all noted)."""
    before = len(checker.problems)
    line, lines = raw["__line__"], raw["__lines__"]
    ident = raw.get("id")
    if not isinstance(ident, str) or not ID.fullmatch(ident):
        checker.problem(f"id must be a slug (letters, digits, - and _), got {ident!r}",
                        lines.get("id", line), f"actions[{number}].id")
        ident = ""
    where = f"{ident or f'actions[{number}]'}."
    checker.keys(raw, ACTION_KEYS, where)
    questions = _questions(checker, raw, where)
    slots = _slots(checker, raw, where)
    slot_names = {slot.name for slot in slots}
    call = _call(checker, raw, where, slot_names)
    reply = _reply(checker, raw, where, slot_names)
    on_status = _on_status(checker, raw, where, slot_names)
    confirm = checker.text(raw, "confirm", where, required=False)
    if confirm is not None:
        checker.template(confirm, lines.get("confirm"), where + "confirm", slot_names)
    on_error = checker.text(raw, "on_error", where, required=False)
    if on_error is not None:
        checker.template(on_error, lines.get("on_error"), where + "on_error", slot_names)
    if len(checker.problems) > before or call is None or reply is None:
        return None
    extra = {"on_error": on_error} if on_error is not None else {}
    return Action(id=ident, questions=questions, slots=slots, call=call, reply=reply,
                  on_status=MappingProxyType(on_status), confirm=confirm, line=line, **extra)


def _questions(checker: _Checker, raw: dict[str, Any], where: str) -> tuple[str, ...]:
    value = raw.get("questions")
    line = raw["__lines__"].get("questions", raw["__line__"])
    if not isinstance(value, list) or not value:
        checker.problem("must be a non-empty list of questions", line, where + "questions")
        return ()
    bad = [q for q in value if not isinstance(q, str) or not q.strip()]
    if bad:
        checker.problem(f"every question must be a non-empty text, got {_plain(bad[0])!r}",
                        line, where + "questions")
    return tuple(q.strip() for q in value if isinstance(q, str) and q.strip())


def _slots(checker: _Checker, raw: dict[str, Any], where: str) -> tuple[Slot, ...]:
    value = raw.get("slots")
    line = raw["__lines__"].get("slots", raw["__line__"])
    if value is None:
        return ()
    if not isinstance(value, dict):
        checker.problem("must be a mapping of slot names to {pattern, ask}", line,
                        where + "slots")
        return ()
    slots = []
    for name, spec in value.items():
        if name in ("__line__", "__lines__"):
            continue
        field = f"{where}slots.{name}"
        slot_line = value["__lines__"].get(str(name), line)
        if not isinstance(name, str) or not SLOT_NAME.fullmatch(name):
            checker.problem("a slot name must be an identifier (letters, digits, _)",
                            slot_line, field)
            continue
        if not isinstance(spec, dict):
            checker.problem("must be a mapping with pattern and ask", slot_line, field)
            continue
        checker.keys(spec, SLOT_KEYS, field + ".")
        pattern = checker.text(spec, "pattern", field + ".")
        ask = checker.text(spec, "ask", field + ".")
        invalid = checker.text(spec, "invalid", field + ".", required=False)
        upper = spec.get("upper", False)
        if not isinstance(upper, bool):
            checker.problem("must be true or false", spec["__lines__"].get("upper"),
                            field + ".upper")
        if pattern is not None:
            try:
                re.compile(pattern)
            except re.error as exc:
                checker.problem(f"the pattern does not compile: {exc}",
                                spec["__lines__"].get("pattern"), field + ".pattern")
                pattern = None
        if pattern is not None and ask is not None:
            slots.append(Slot(name, pattern, ask, invalid, upper is True))
    return tuple(slots)


def _call(checker: _Checker, raw: dict[str, Any], where: str, slots: set[str]) -> Call | None:
    value = raw.get("call")
    line = raw["__lines__"].get("call", raw["__line__"])
    where += "call."
    if not isinstance(value, dict):
        checker.problem("missing or not a mapping with method and url", line, where[:-1])
        return None
    lines = value["__lines__"]
    checker.keys(value, CALL_KEYS, where)
    method = value.get("method", "GET")
    if not isinstance(method, str) or method.upper() not in METHODS:
        checker.problem(f"method must be one of {', '.join(METHODS)}, got {method!r}",
                        lines.get("method", line), where + "method")
        method = "GET"
    method = method.upper()
    url = checker.text(value, "url", where)
    if url is not None:
        checker.template(url, lines.get("url"), where + "url", slots, env=True)
        if not url.startswith("${") and not re.match(r"https?://", url, re.IGNORECASE):
            checker.problem("the URL must start with http:// or https:// (or ${VARIABLE})",
                            lines.get("url"), where + "url")
    headers = _headers(checker, value, where, slots)
    body = _plain(value.get("body"))
    if body is not None:
        if method not in ("POST", "PUT", "PATCH"):
            checker.problem(f"a body is only sent with POST, PUT or PATCH, not {method}",
                            lines.get("body"), where + "body")
        for leaf in _string_leaves(body):
            checker.template(leaf, lines.get("body"), where + "body", slots)
    timeout = value.get("timeout_s", 3.0)
    if (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
            or not 0 < timeout <= checker.max_timeout_s):
        checker.problem(f"must be a number of seconds > 0 and <= {checker.max_timeout_s:g}, "
                        f"got {timeout!r}", lines.get("timeout_s", line), where + "timeout_s")
        timeout = 3.0
    if url is None:
        return None
    return Call(method, url, headers, body, float(timeout))


def _headers(checker: _Checker, call: dict[str, Any], where: str, slots: set[str]
             ) -> tuple[tuple[str, str], ...]:
    value = call.get("headers")
    line = call["__lines__"].get("headers", call["__line__"])
    if value is None:
        return ()
    if not isinstance(value, dict):
        checker.problem("must be a mapping of header names to values", line, where + "headers")
        return ()
    headers = []
    for name, text in _plain(value).items():
        field = f"{where}headers.{name}"
        at = value["__lines__"].get(str(name), line)
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9-]+", name):
            checker.problem("a header name is letters, digits and -", at, field)
        elif not isinstance(text, (str, int)) or isinstance(text, bool) or str(text) == "":
            checker.problem("a header value must be a non-empty text", at, field)
        else:
            checker.template(str(text), at, field, slots, env=True)
            headers.append((name, str(text)))
    return tuple(headers)


def _string_leaves(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [leaf for item in value.values() for leaf in _string_leaves(item)]
    if isinstance(value, list):
        return [leaf for item in value for leaf in _string_leaves(item)]
    return []


def _reply(checker: _Checker, raw: dict[str, Any], where: str, slots: set[str]
           ) -> Reply | None:
    value = raw.get("reply")
    line = raw["__lines__"].get("reply", raw["__line__"])
    if isinstance(value, str) and value.strip():
        checker.template(value.strip(), line, where + "reply", slots, response=True)
        return Reply(text=value.strip())
    if not isinstance(value, dict):
        checker.problem("missing: a text, or a mapping with field, cases and default", line,
                        where + "reply")
        return None
    where += "reply."
    checker.keys(value, REPLY_KEYS, where)
    field = checker.text(value, "field", where)
    if field is not None and not FIELD_NAME.fullmatch(field):
        checker.problem(f"'{field}' is not a response field path", value["__lines__"]["field"],
                        where + "field")
    default = checker.text(value, "default", where, required=False)
    if default is not None:
        checker.template(default, value["__lines__"].get("default"), where + "default", slots,
                         response=True)
    cases_raw = value.get("cases")
    cases: list[tuple[str, str]] = []
    cases_line = value["__lines__"].get("cases", line)
    if not isinstance(cases_raw, dict) or len(cases_raw) <= 2:
        checker.problem("must be a non-empty mapping of field values to replies", cases_line,
                        where + "cases")
    else:
        for key, text in _plain(cases_raw).items():
            at = cases_raw["__lines__"].get(str(key), cases_line)
            if not isinstance(text, str) or not text.strip():
                checker.problem("a case's reply must be a non-empty text", at,
                                f"{where}cases.{key}")
                continue
            checker.template(text.strip(), at, f"{where}cases.{key}", slots, response=True)
            shown = ("yes" if key else "no") if isinstance(key, bool) else str(key)
            cases.append((shown, text.strip()))
    return Reply(field=field, cases=tuple(cases), default=default) if field else None


def _on_status(checker: _Checker, raw: dict[str, Any], where: str, slots: set[str]
               ) -> dict[int, str]:
    value = raw.get("on_status")
    line = raw["__lines__"].get("on_status", raw["__line__"])
    if value is None:
        return {}
    if not isinstance(value, dict):
        checker.problem("must be a mapping of HTTP statuses to replies", line,
                        where + "on_status")
        return {}
    result = {}
    for code, text in _plain(value).items():
        field = f"{where}on_status.{code}"
        at = value["__lines__"].get(str(code), line)
        if isinstance(code, bool) or not isinstance(code, int) or not 100 <= code <= 599:
            checker.problem(f"an HTTP status is a number from 100 to 599, got {code!r}", at,
                            field)
        elif not isinstance(text, str) or not text.strip():
            checker.problem("must be a non-empty text", at, field)
        else:
            checker.template(text.strip(), at, field, slots)
            result[code] = text.strip()
    return result
