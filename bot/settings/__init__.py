"""Settings: one typed object read from supportbot.yaml, then SUPPORTBOT_* environment variables."""

from __future__ import annotations

from bot.settings.environment import (
    CONFIG_ENV,
    ENV_DELIMITER,
    ENV_PREFIX,
    WORKER_ENV,
    env_name,
    env_values,
)
from bot.settings.example import EXAMPLE_HEADER, example_yaml
from bot.settings.learning import LearningSettings
from bot.settings.loading import DEFAULT_CONFIG, load_settings, settings_to_yaml
from bot.settings.model import (
    BUNDLED_EMBEDDER,
    BUNDLED_GENERATOR,
    GenerationSettings,
    ModelSettings,
    OpenAISettings,
)
from bot.settings.persona import PLACEHOLDERS, PersonaSettings
from bot.settings.retrieval import DialogueSettings, RetrievalSettings
from bot.settings.safety import (
    INPUT_GUARDS,
    OUTPUT_GUARDS,
    PII_ENTITIES,
    InputGuard,
    OutputGuard,
    SafetySettings,
)
from bot.settings.schema import Settings
from bot.settings.serving import OperatorSettings, StorageSettings, WebSettings, check_networks
from bot.settings.telegram import TELEGRAM_TEXTS, TelegramSettings
from bot.settings.urls import hide_password

__all__ = [
    "BUNDLED_EMBEDDER", "BUNDLED_GENERATOR", "CONFIG_ENV", "DEFAULT_CONFIG", "ENV_DELIMITER",
    "ENV_PREFIX", "EXAMPLE_HEADER", "INPUT_GUARDS", "OUTPUT_GUARDS", "PII_ENTITIES", "PLACEHOLDERS",
    "TELEGRAM_TEXTS", "WORKER_ENV", "DialogueSettings", "GenerationSettings", "InputGuard",
    "LearningSettings", "ModelSettings", "OpenAISettings", "OperatorSettings", "OutputGuard",
    "PersonaSettings",
    "RetrievalSettings", "SafetySettings", "Settings", "StorageSettings", "TelegramSettings",
    "WebSettings", "check_networks", "env_name", "env_values", "example_yaml", "hide_password",
    "load_settings", "settings_to_yaml",
]
