"""The shipped default model on the shipped examples: level must not decide who speaks."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"


@pytest.fixture(scope="module")
def shipped():
    from vc.model import load_model

    return load_model(REPO / "models" / "default", device="cpu")


def _code(audio, model):
    from vc.speakers import posterior_f, speech_segments

    segments, _ = speech_segments(audio, model)
    return posterior_f(segments, model).mean(axis=0)


def _cos(a, b):
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_a_recording_20_db_quieter_converts_to_the_same_voice(shipped):
    """The same clip at full level and 20 dB under it, converted to each shipped target: both outputs
    are nearer the target's code than the source's, and nearer each other than to the source."""
    from vc.audio import read_audio
    from vc.conversion import convert_audio16k
    from vc.speakers import load_speaker

    manifest = json.loads((EXAMPLES / "manifest.json").read_text())
    clip = manifest["clips"][0]
    audio, _ = read_audio(EXAMPLES / clip["path"], sr=16000)
    source = _code(audio, shipped)
    for entry in manifest["targets"]:
        target = load_speaker(EXAMPLES / entry["speaker"], shipped)
        loud = _code(convert_audio16k(audio, target, shipped, n_iter=8), shipped)
        quiet = _code(convert_audio16k(audio * 0.1, target, shipped, n_iter=8), shipped)
        for out in (loud, quiet):
            assert _cos(out, target.f) > _cos(out, source), entry["name"]
        assert _cos(loud, quiet) > max(_cos(loud, source), _cos(quiet, source)), entry["name"]
