"""The root Settings object: every section, read from the environment first, then the file."""

from __future__ import annotations

import os
from typing import Any

from pydantic import Field
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from bot.settings.actions import ActionsSettings
from bot.settings.environment import ENV_DELIMITER, ENV_PREFIX, env_values
from bot.settings.learning import LearningSettings
from bot.settings.model import ModelSettings
from bot.settings.persona import PersonaSettings
from bot.settings.retrieval import DialogueSettings, RetrievalSettings
from bot.settings.safety import SafetySettings
from bot.settings.serving import OperatorSettings, StorageSettings, WebSettings
from bot.settings.telegram import TelegramSettings


class Settings(BaseSettings):
    """All settings; sources in order of precedence: environment, then file, then defaults."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter=ENV_DELIMITER,
                                      extra="forbid", nested_model_default_partial_update=True)

    persona: PersonaSettings = Field(default_factory=PersonaSettings)
    model: ModelSettings = Field(default_factory=ModelSettings)
    retrieval: RetrievalSettings = Field(default_factory=RetrievalSettings)
    dialogue: DialogueSettings = Field(default_factory=DialogueSettings)
    safety: SafetySettings = Field(default_factory=SafetySettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    web: WebSettings = Field(default_factory=WebSettings)
    telegram: TelegramSettings = Field(default_factory=TelegramSettings)
    operators: OperatorSettings = Field(default_factory=OperatorSettings)
    learning: LearningSettings = Field(default_factory=LearningSettings)
    actions: ActionsSettings = Field(default_factory=ActionsSettings)

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The file's contents arrive as init arguments; the environment overrides them.
        return (_EnvSource(settings_cls), init_settings)


class _EnvSource(PydanticBaseSettingsSource):
    """SUPPORTBOT_* variables as nested values; list settings take commas or a JSON array."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        """Unused: __call__ reads the whole environment at once."""
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        return env_values(os.environ, self.settings_cls)
