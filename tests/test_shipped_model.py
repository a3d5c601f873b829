"""The shipped model (models/default) on the shipped examples: conversion moves a voice to its target."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
CLIPS = sorted((REPO / "examples" / "audio").glob("*.flac"))
TARGETS = sorted((REPO / "examples" / "speakers").glob("*.npy"))


@pytest.fixture(scope="module")
def shipped():
    from vc.model import load_model

    return load_model(REPO / "models" / "default", device="cpu", threads=1)


def test_the_examples_are_there():
    assert len(CLIPS) >= 4 and len(TARGETS) >= 2


@pytest.mark.parametrize("clip", CLIPS, ids=lambda p: p.stem)
def test_converted_clip_enrols_closer_to_each_target_than_to_its_source(clip, shipped, tmp_path):
    """Enrol the output as vc-enroll would: its code f must lie nearer the target's than the source's."""
    import vc
    from vc.audio import read_audio, write_wav
    from vc.speakers import enroll, load_speaker

    source_f = enroll([clip], shipped).embedding
    audio, _ = read_audio(clip, sr=16000)
    for path in TARGETS:
        target = load_speaker(path, shipped)
        out = vc.convert(audio, 16000, target, shipped, n_iter=16)
        write_wav(tmp_path / "out.wav", out, 16000, subtype="FLOAT")
        converted_f = enroll([tmp_path / "out.wav"], shipped).embedding
        to_target = float(np.linalg.norm(converted_f - target.f))
        to_source = float(np.linalg.norm(converted_f - source_f))
        assert to_target < to_source, f"{clip.name} -> {path.name}: {to_target:.2f} to the target, " \
                                      f"{to_source:.2f} to the source"


def _code(audio, model):
    from vc.speakers import posterior_f, speech_segments

    segments, _ = speech_segments(audio, model)
    return posterior_f(segments, model).mean(axis=0)


def _cos(a, b):
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_a_recording_20_db_quieter_converts_to_the_same_voice(shipped):
    """Level must not decide who speaks: the same clip at full level and 20 dB under it, converted to
    each shipped target, gives outputs nearer the target's code than the source's, and nearer each other
    than to the source; the source's own code hardly moves with level."""
    from vc.audio import read_audio
    from vc.conversion import convert_at_model_rate
    from vc.speakers import load_speaker

    audio, _ = read_audio(CLIPS[0], sr=16000)
    source = _code(audio, shipped)
    assert _cos(source, _code(audio * 0.1, shipped)) > 0.9
    for path in TARGETS:
        target = load_speaker(path, shipped)
        loud = _code(convert_at_model_rate(audio, target, shipped, n_iter=8), shipped)
        quiet = _code(convert_at_model_rate(audio * 0.1, target, shipped, n_iter=8), shipped)
        for out in (loud, quiet):
            assert _cos(out, target.f) > _cos(out, source), path.name
        assert _cos(loud, quiet) > max(_cos(loud, source), _cos(quiet, source)), path.name


def test_the_shipped_model_can_seed_a_fine_tune():
    """Its graphs' weights read back into PyTorch compute what the graphs do (vc-train --init-from models/default)."""
    import json

    from training.checkpoints import NOT_EXPORTED, graph_parity, load_initial_weights
    from training.config import model_config_from_dict
    from training.dsae import DSAE

    model_dir = REPO / "models" / "default"
    config = json.loads((model_dir / "train-config.json").read_text())["model"]
    model = DSAE(model_config_from_dict({**config, "feature_dim": 200}))
    fresh = load_initial_weights(model, str(model_dir), "cpu")
    assert fresh and all(k.startswith(NOT_EXPORTED) for k in fresh)
    assert graph_parity(model, model_dir) < 1e-4
