"""Dialogue script files for `supportbot eval dialogue --scripts` (offline tool): named
multi-turn conversations, each turn a message and what the bot's reply must show.

```yaml
scripts:
  - name: order number in the first message
    api: down            # optional: down | slow
    turns:
      - say: has order KO-123456 shipped?
        decision: action   # the reply's decision (ask, action, answer, fallback, handoff...)
        action: order-status  # the action in the reply's meta (started, asked or called)
        source: order-status  # the reply's first source (an FAQ entry or action id)
        call: ok           # the outcome of the reply's API call (ok, timeout, connect, ...)
        contains: shipped  # a text, or a list: each in the reply (case ignored)
        not_contains: [KO-000000]  # a text, or a list: none in the reply (case ignored)
```

`say` is required; every expectation is optional. `api: down` runs the script against a closed
loopback port (every call fails to connect); `api: slow` only labels a script that uses a slow
order itself (the demo shop's KO-000504 answers after 10 s). `read_scripts` checks the whole
file before any model loads and raises `ScriptFileError` naming the file, line and field of
every problem, like the FAQ and action files (retrieval/corpus.py, bot/actions/spec.py).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.types import Decision
from retrieval.corpus import YamlSyntax, open_text_file, yaml_with_lines
from retrieval.errors import CorpusError, CorpusProblem

SCRIPT_KEYS = ("name", "api", "turns")
TURN_KEYS = ("say", "decision", "action", "source", "call", "contains", "not_contains")
APIS = ("down", "slow")
# The outcomes a call records (bot/actions/caller.py, bot/dialogue/actions.py).
OUTCOMES = ("ok", "timeout", "connect", "http_status", "bad_json", "too_large",
            "host_not_allowed", "redirect", "breaker_open", "missing_env", "bad_url",
            "missing_field")
DECISIONS = tuple(d.value for d in Decision)


class ScriptFileError(CorpusError):
    """A dialogue script file is missing, unreadable or malformed; lists every problem."""


@dataclass(frozen=True)
class Expect:
    """What one turn's reply must show; None (or empty) checks nothing."""

    decision: str | None = None
    action: str | None = None
    source: str | None = None
    call: str | None = None
    contains: tuple[str, ...] = ()
    not_contains: tuple[str, ...] = ()


@dataclass(frozen=True)
class ScriptTurn:
    """A customer's message and what the bot's reply to it must show."""

    say: str
    expect: Expect
    line: int | None = None


@dataclass(frozen=True)
class Script:
    """A named conversation, run from its first turn in a new conversation."""

    name: str
    turns: tuple[ScriptTurn, ...]
    api: str | None = None  # "down": calls go to a closed port; "slow": a label
    line: int | None = None


class _Checker:
    """Collects the problems of one file."""

    def __init__(self, path: Path, known_ids: Collection[str] | None,
                 action_ids: Collection[str] | None) -> None:
        self.path = path
        self.known_ids = known_ids
        self.action_ids = action_ids
        self.problems: list[CorpusProblem] = []

    def problem(self, message: str, line: int | None, field: str | None) -> None:
        self.problems.append(CorpusProblem(self.path, message, line, field))

    def unknown_keys(self, raw: Mapping[str, Any], allowed: tuple[str, ...], where: str
                     ) -> None:
        for key in raw:
            if key not in ("__line__", "__lines__") and key not in allowed:
                self.problem(f"unknown field '{key}' (expected one of: {', '.join(allowed)})",
                             _line(raw, str(key)), f"{where}.{key}")

    def choice(self, raw: Mapping[str, Any], key: str, where: str,
               allowed: Collection[str] | None, what: str) -> str | None:
        """An optional text field that must be one of `allowed` (any text when None)."""
        value = raw.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            self.problem(f"must be a non-empty text, got {value!r}", _line(raw, key),
                         f"{where}.{key}")
            return None
        if allowed is not None and value not in allowed:
            shown = ", ".join(sorted(allowed))
            self.problem(f"'{value}' is not {what} (expected one of: {shown})",
                         _line(raw, key), f"{where}.{key}")
            return None
        return value

    def texts(self, raw: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
        """An optional text or list of texts."""
        value = raw.get(key)
        if value is None:
            return ()
        items = value if isinstance(value, list) else [value]
        if not items or not all(isinstance(i, str) and i.strip() for i in items):
            self.problem("must be a non-empty text or a list of them", _line(raw, key),
                         f"{where}.{key}")
            return ()
        return tuple(items)


def _line(raw: Mapping[str, Any], key: str) -> int | None:
    line: int | None = raw["__lines__"].get(key, raw["__line__"])
    return line


def read_scripts(path: Path | str, known_ids: Collection[str] | None = None,
                 action_ids: Collection[str] | None = None) -> list[Script]:
    """The scripts of a YAML file; ScriptFileError names the file, line and field of every
    problem. With `known_ids` (FAQ entries and actions) a `source` must be one of them; with
    `action_ids` an `action` must be one of those."""
    path = Path(path)
    readers: Mapping[str, Callable[[str], str]] = {".yaml": str, ".yml": str}
    _, text = open_text_file(path, "dialogue scripts", readers, ".yaml or .yml",
                             ScriptFileError)
    checker = _Checker(path, known_ids, action_ids)
    items = _items(checker, text)
    scripts: list[Script] = []
    seen: dict[str, int | None] = {}
    for number, raw in enumerate(items, 1):
        script = _script(checker, raw, number)
        if script is None:
            continue
        if script.name in seen:
            checker.problem(f"duplicate script name '{script.name}' (first on line "
                            f"{seen[script.name]})", script.line, f"scripts[{number}].name")
        seen.setdefault(script.name, script.line)
        scripts.append(script)
    if not scripts and not checker.problems:
        checker.problem("no scripts in file", None, "scripts")
    if checker.problems:
        raise ScriptFileError(checker.problems)
    return scripts


def _items(checker: _Checker, text: str) -> list[Any]:
    """The raw `scripts:` list (problems noted)."""
    try:
        doc = yaml_with_lines(text)
    except YamlSyntax as bad:
        checker.problem(f"invalid YAML: {bad.reason}", bad.line, None)
        return []
    if not isinstance(doc, dict) or not isinstance(doc.get("scripts"), list):
        line = doc["__lines__"].get("scripts") if isinstance(doc, dict) else None
        checker.problem("expected a mapping with a list 'scripts' (name, turns)", line,
                        "scripts")
        return []
    checker.unknown_keys(doc, ("scripts",), "file")
    return list(doc["scripts"])


def _script(checker: _Checker, raw: Any, number: int) -> Script | None:
    """One script, or None after noting what is wrong with it."""
    where = f"scripts[{number}]"
    if not isinstance(raw, dict):
        checker.problem(f"must be a mapping with name and turns, got {raw!r}", None, where)
        return None
    before = len(checker.problems)
    checker.unknown_keys(raw, SCRIPT_KEYS, where)
    name = checker.choice(raw, "name", where, None, "a name")
    if name is None and "name" not in raw:
        checker.problem("missing (a non-empty text)", raw["__line__"], f"{where}.name")
    api = checker.choice(raw, "api", where, APIS, "an API mode")
    items = raw.get("turns")
    turns: list[ScriptTurn] = []
    if not isinstance(items, list) or not items:
        checker.problem("must be a non-empty list of turns ({say, ...})", _line(raw, "turns"),
                        f"{where}.turns")
    else:
        for position, item in enumerate(items, 1):
            turn = _turn(checker, item, f"{where}.turns[{position}]", _line(raw, "turns"))
            if turn is not None:
                turns.append(turn)
    if len(checker.problems) > before or name is None:
        return None
    return Script(name.strip(), tuple(turns), api, raw["__line__"])


def _turn(checker: _Checker, raw: Any, where: str, list_line: int | None) -> ScriptTurn | None:
    """One turn, or None after noting what is wrong with it."""
    if not isinstance(raw, dict):
        checker.problem(f"must be a mapping with say and expectations, got {raw!r}",
                        list_line, where)
        return None
    before = len(checker.problems)
    checker.unknown_keys(raw, TURN_KEYS, where)
    say = raw.get("say")
    if not isinstance(say, str) or not say.strip():
        checker.problem(f"missing or empty (the customer's message), got {say!r}",
                        _line(raw, "say"), f"{where}.say")
    expect = Expect(
        decision=checker.choice(raw, "decision", where, DECISIONS, "a decision"),
        action=checker.choice(raw, "action", where, checker.action_ids, "a declared action"),
        source=checker.choice(raw, "source", where, checker.known_ids,
                              "an FAQ entry or action id"),
        call=checker.choice(raw, "call", where, OUTCOMES, "a call outcome"),
        contains=checker.texts(raw, "contains", where),
        not_contains=checker.texts(raw, "not_contains", where))
    if len(checker.problems) > before:
        return None
    assert isinstance(say, str)
    return ScriptTurn(say, expect, raw["__line__"])
