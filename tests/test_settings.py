"""Settings: file, environment, relative paths, and errors that name key and source."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from bot.errors import SettingsError, SettingsWarning
from bot.settings import (
    PLACEHOLDERS,
    PersonaSettings,
    Settings,
    example_yaml,
    load_settings,
    settings_to_yaml,
)

ROOT = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "supportbot.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_without_a_file(tmp_path: Path) -> None:
    settings = load_settings(tmp_path / "absent.yaml")
    assert settings.retrieval.embedder == "all-MiniLM-L6-v2"
    assert settings.model.base_model == "SmolLM2-135M-Instruct"
    assert (settings.retrieval.top_k, settings.retrieval.answer_threshold,
            settings.retrieval.suggest_threshold) == (5, 0.70, 0.45)
    assert settings.retrieval.faq_path == Path("data/faq.yaml"), "no file: nothing to resolve"
    assert settings.model.cache_dir == Path.home() / ".cache" / "supportbot" / "models"
    assert settings.persona.render(settings.persona.greeting) == \
        "Hi, I'm Kes from Kestrel Outfitters. How can I help you today?"


def test_bundled_model_names_agree_with_the_model_code() -> None:
    from bot.generation.bundled import BUNDLED_GENERATOR
    from retrieval.embedder import BUNDLED_EMBEDDER

    assert Settings().model.base_model == BUNDLED_GENERATOR
    assert Settings().retrieval.embedder == BUNDLED_EMBEDDER


def test_reading_settings_loads_no_model_code() -> None:
    """`config show` must stay fast: bot.settings imports no retrieval, numpy or torch."""
    code = ("import bot.settings, sys; print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "{'torch','faiss','numpy','transformers','sentence_transformers','retrieval'}))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=120, check=True)
    assert proc.stdout.strip() == "[]"


def test_file_values_and_relative_paths(tmp_path: Path) -> None:
    path = write(tmp_path, "persona:\n  company_name: Acme\nretrieval:\n  top_k: 3\n"
                           "  faq_path: faq.csv\nstorage:\n  database_url: sqlite+aiosqlite:///x.db\n"
                           "web:\n  secret_file: keys/web-secret\n")
    settings = load_settings(path)
    assert settings.web.secret_file == tmp_path / "keys" / "web-secret"
    assert settings.persona.company_name == "Acme"
    assert settings.persona.bot_name == "Kes", "unset keys keep their defaults"
    assert settings.retrieval.top_k == 3
    assert settings.retrieval.faq_path == tmp_path / "faq.csv"
    assert settings.storage.database_url == f"sqlite+aiosqlite:///{tmp_path.resolve()}/x.db"


def test_environment_overrides_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "retrieval:\n  top_k: 3\n  answer_threshold: 0.8\n")
    monkeypatch.setenv("SUPPORTBOT_RETRIEVAL__TOP_K", "7")
    monkeypatch.setenv("SUPPORTBOT_MODEL__GENERATION__TEMPERATURE", "0")
    settings = load_settings(path)
    assert settings.retrieval.top_k == 7
    assert settings.retrieval.answer_threshold == 0.8, "file values the env leaves alone stay"
    assert settings.model.generation.temperature == 0.0


def test_bad_value_names_key_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "persona:\n  bot_name: Kes\nretrieval:\n  faq_path: faq.yaml\n"
                           "  top_k: 0\n")
    with pytest.raises(SettingsError) as caught:
        load_settings(path)
    message = str(caught.value)
    assert "retrieval.top_k" in message and "greater than or equal to 1" in message
    assert f"[{path}, line 5]" in message and "(got 0)" in message


def test_bad_env_value_names_the_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUPPORTBOT_MODEL__GENERATION__TOP_P", "2")
    with pytest.raises(SettingsError, match=r"model\.generation\.top_p.*environment variable "
                                            r"SUPPORTBOT_MODEL__GENERATION__TOP_P"):
        load_settings(tmp_path / "absent.yaml")


@pytest.mark.parametrize(("text", "fragment"), [
    ("retrieval:\n  topk: 3\n", "retrieval.topk: unknown setting"),
    ("model:\n  device: tpu\n", "model.device: Input should be 'auto', 'cpu' or 'cuda'"),
    ("retrieval:\n  answer_threshold: 0.3\n  suggest_threshold: 0.5\n",
     "must not exceed answer_threshold"),
    ("retrieval: [1, 2\n", "line 2: invalid YAML"),
    ("- just\n- a list\n", "must hold a mapping of sections"),
])
def test_bad_files(tmp_path: Path, text: str, fragment: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(write(tmp_path, text))
    assert fragment in str(caught.value)
    assert str(tmp_path / "supportbot.yaml") in str(caught.value)


def test_explicit_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="not found"):
        load_settings(tmp_path / "absent.yaml", explicit=True)


def test_yaml_dump_round_trips(tmp_path: Path) -> None:
    settings = Settings()
    settings.retrieval.top_k = 9
    reloaded = load_settings(write(tmp_path, settings_to_yaml(settings)))
    assert reloaded.retrieval.top_k == 9
    assert reloaded.persona == settings.persona


def test_committed_example_is_generated_and_loads() -> None:
    example = ROOT / "supportbot.example.yaml"
    assert example.read_text(encoding="utf-8") == example_yaml(), \
        "regenerate it: supportbot config example > supportbot.example.yaml"
    loaded = load_settings(example, explicit=True)
    defaults = Settings()
    assert loaded.persona == defaults.persona and loaded.dialogue == defaults.dialogue
    assert loaded.model.generation == defaults.model.generation
    assert loaded.model.cache_dir == defaults.model.cache_dir
    assert loaded.retrieval.faq_path == ROOT / "data" / "faq.yaml"
    assert loaded.retrieval.model_dump(exclude={"faq_path", "index_dir"}) == \
        defaults.retrieval.model_dump(exclude={"faq_path", "index_dir"})


def test_example_documents_every_key() -> None:
    text = example_yaml()
    assert "wins over the calibrated one.\n  # answer_threshold: 0.7\n" in text
    assert "    # Nucleus sampling mass.\n    top_p: 0.9\n" in text
    for name in PersonaSettings.model_fields:
        assert f"\n  {name}: " in text


@pytest.mark.parametrize(("key", "text", "fragment"), [
    ("greeting", "Hello {customer}", "unknown placeholder {customer}"),
    ("greeting", "Hello {max_chars}", "unknown placeholder {max_chars}"),
    ("fallback_text", "Sorry {}", "unknown placeholder {}"),
    ("system_prompt", "You are {bot_name", "malformed braces"),
    ("handoff_text", "Bye }", "malformed braces"),
    ("empty_text", "{bot_name.upper}", "unknown placeholder {bot_name.upper}"),
])
def test_unknown_placeholders_are_refused_at_load(tmp_path: Path, key: str, text: str,
                                                  fragment: str) -> None:
    path = write(tmp_path, f"persona:\n  bot_name: Kes\n  {key}: '{text}'\n")
    with pytest.raises(SettingsError) as caught:
        load_settings(path)
    message = str(caught.value)
    assert f"persona.{key}: {fragment}" in message
    assert f"[{path}, line 3]" in message


def test_known_placeholders_and_literal_braces_load(tmp_path: Path) -> None:
    path = write(tmp_path, "persona:\n  greeting: '{{hi}} from {bot_name} at {company_name}'\n"
                           "  too_long_text: 'Under {max_chars}, {bot_name}.'\n")
    persona = load_settings(path).persona
    assert persona.render(persona.greeting) == "{hi} from Kes at Kestrel Outfitters"
    assert persona.render(persona.too_long_text, max_chars=10) == "Under 10, Kes."


def test_every_default_persona_text_renders() -> None:
    persona = PersonaSettings()
    for key in PLACEHOLDERS:
        assert persona.render(getattr(persona, key), max_chars=5, minutes=5, wait="soon")


def test_list_settings_from_the_environment(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUPPORTBOT_DIALOGUE__HANDOFF_KEYWORDS", "human, real person,")
    assert load_settings(tmp_path / "absent.yaml").dialogue.handoff_keywords == \
        ["human", "real person"]
    monkeypatch.setenv("SUPPORTBOT_DIALOGUE__HANDOFF_KEYWORDS", '["a, b", "c"]')
    assert load_settings(tmp_path / "absent.yaml").dialogue.handoff_keywords == ["a, b", "c"]


def test_a_section_as_json_from_the_environment(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUPPORTBOT_RETRIEVAL", '{"top_k": 4, "max_suggestions": 2}')
    monkeypatch.setenv("SUPPORTBOT_RETRIEVAL__TOP_K", "6")
    settings = load_settings(tmp_path / "absent.yaml")
    assert (settings.retrieval.top_k, settings.retrieval.max_suggestions) == (6, 2)


@pytest.mark.parametrize(("name", "value", "fragment"), [
    ("SUPPORTBOT_DIALOGUE__HANDOFF_KEYWORDS", "[human",
     "dialogue.handoff_keywords: not a JSON list"),
    ("SUPPORTBOT_RETRIEVAL", "{top_k: 3}", "retrieval: not a JSON object"),
    ("SUPPORTBOT_RETRIEVAL", "[3]", "retrieval: expected a JSON object"),
    ("SUPPORTBOT_RETRIEVAL__TOP_K", "many", "retrieval.top_k: Input should be a valid integer"),
])
def test_unparsable_env_values_name_the_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 name: str, value: str, fragment: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as caught:
        load_settings(tmp_path / "absent.yaml")
    assert fragment in str(caught.value)
    assert f"[environment variable {name}]" in str(caught.value)


def test_threshold_refused_from_env_names_the_variable(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUPPORTBOT_RETRIEVAL__SUGGEST_THRESHOLD", "0.9")
    with pytest.raises(SettingsError) as caught:
        load_settings(tmp_path / "absent.yaml")
    assert "must not exceed answer_threshold" in str(caught.value)
    assert "[environment variable SUPPORTBOT_RETRIEVAL__SUGGEST_THRESHOLD]" in str(caught.value)
    path = write(tmp_path, "retrieval:\n  answer_threshold: 0.5\n")
    with pytest.raises(SettingsError) as caught:
        load_settings(path)
    assert (f"[environment variable SUPPORTBOT_RETRIEVAL__SUGGEST_THRESHOLD; {path}, line 1]"
            in str(caught.value)), "both sources of the clash are named"


def test_unknown_env_variables_warn_with_the_closest_name(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUPPORTBOT_RETRIEVAL_TOP_K", "3")
    with pytest.warns(SettingsWarning) as caught:
        settings = load_settings(tmp_path / "absent.yaml")
    assert settings.retrieval.top_k == 5, "the misspelt variable is ignored"
    assert [str(w.message) for w in caught] == [
        "ignoring unknown environment variable SUPPORTBOT_RETRIEVAL_TOP_K: "
        "did you mean SUPPORTBOT_RETRIEVAL__TOP_K?"]


def test_known_env_variables_do_not_warn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUPPORTBOT_CONFIG", str(tmp_path / "absent.yaml"))
    monkeypatch.setenv("SUPPORTBOT_MODEL__GENERATION__TOP_P", "0.5")
    monkeypatch.setenv("supportbot_retrieval__top_k", "4")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        settings = load_settings(tmp_path / "absent.yaml")
    assert (settings.model.generation.top_p, settings.retrieval.top_k) == (0.5, 4)


def test_non_utf8_file_names_file_line_and_byte(tmp_path: Path) -> None:
    path = tmp_path / "supportbot.yaml"
    path.write_bytes("persona:\n  company_name: Caf\xe9\n".encode("latin-1"))
    with pytest.raises(SettingsError) as caught:
        load_settings(path)
    message = str(caught.value)
    assert str(path) in message and "line 2: not UTF-8 text" in message and "byte 28" in message


def test_utf8_bom_and_windows_line_ends_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "supportbot.yaml"
    path.write_bytes(b"\xef\xbb\xbfpersona:\r\n  company_name: Caf\xc3\xa9\r\n")
    assert load_settings(path).persona.company_name == "Café"


def test_database_password_is_hidden_in_the_dump(tmp_path: Path) -> None:
    settings = Settings()
    settings.storage.database_url = "postgresql+asyncpg://u:hunter2@db.example:5432/bot"
    shown = settings_to_yaml(settings)
    assert "hunter2" not in shown
    assert "database_url: postgresql+asyncpg://u:***@db.example:5432/bot" in shown
    reloaded = load_settings(write(tmp_path, settings_to_yaml(settings, hide_passwords=False)))
    assert reloaded.storage.database_url == settings.storage.database_url
    settings.storage.database_url = "postgresql://u:secret@host:port/db"  # make_url refuses it
    assert "postgresql://u:***@host:port/db" in settings_to_yaml(settings)


def test_unknown_env_variable_without_a_close_name(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUPPORTBOT_FOO", "1")
    with pytest.warns(SettingsWarning, match=r"SUPPORTBOT_FOO: settings are "
                                             r"SUPPORTBOT_<SECTION>__<KEY>"):
        load_settings(tmp_path / "absent.yaml")


def test_every_persona_text_has_its_placeholders_checked() -> None:
    from bot.settings import PLACEHOLDERS, PersonaSettings

    texts = {name for name, field in PersonaSettings.model_fields.items()
             if field.annotation in (str, "str")} - {"company_name", "bot_name"}
    assert texts == set(PLACEHOLDERS)
