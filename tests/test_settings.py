"""Settings: file, environment, relative paths, and errors that name key and source."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.errors import SettingsError
from bot.settings import Settings, load_settings, settings_to_yaml


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "supportbot.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_without_a_file(tmp_path: Path) -> None:
    settings = load_settings(tmp_path / "absent.yaml")
    assert settings == Settings()
    assert settings.retrieval.embedder == "all-MiniLM-L6-v2"
    assert settings.retrieval.suggest_threshold < settings.retrieval.answer_threshold


def test_file_values_and_relative_paths(tmp_path: Path) -> None:
    path = write(tmp_path, "persona:\n  company_name: Acme\nretrieval:\n  top_k: 3\n"
                           "  faq_path: faq.csv\nstorage:\n  database_url: sqlite+aiosqlite:///x.db\n")
    settings = load_settings(path)
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
