"""training.data.content: packing utterances into Whisper windows, finding their frames, the projection."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from training.data.content import WINDOW_SECONDS, _fit_projection, _pack, _rows_of


@dataclass
class Utt:
    index: int
    seconds: float


def test_utterances_are_packed_into_windows_and_long_ones_cut():
    utts = [Utt(0, 12.0), Utt(1, 12.0), Utt(2, 12.0), Utt(3, 70.0), Utt(4, 1.0)]
    windows = list(_pack(utts, lambda u: np.full(int(u.seconds * 16000), u.index, np.float32)))
    placed = [p for _, ps in windows for p in ps]
    assert [p[0] for p in placed] == [0, 1, 2, 3, 3, 3, 4]
    for audio, ps in windows:
        assert audio.size <= (WINDOW_SECONDS + 0.1) * 16000
        for index, offset, n in ps:
            start = max(offset, 0)
            # the window holds the utterance's own samples where it says
            assert np.all(audio[start:start + min(n, 16000)] == index)
    assert [p[1] for p in placed if p[0] == 3] == [0, -30 * 16000, -60 * 16000]
    # 12 s + gap + 12 s fit in one window, a third 12 s does not
    assert [p[0] for p in windows[0][1]] == [0, 1]


def test_frames_map_to_the_encoder_rows_of_their_time():
    frames, rows = _rows_of(16000, 300, 160, 1500)        # placed 1 s into the window
    assert frames.tolist() == list(range(300))
    assert rows[0] == 50 and rows[2] == 51 and rows[-1] == 50 + 299 // 2
    frames, rows = _rows_of(-30 * 16000, 3200, 160, 1500)  # the second window of a 32 s utterance
    assert frames[0] == 3000 and rows[0] == 0 and frames.size == 200


def test_projection_leaves_out_what_every_window_has_at_a_position():
    rng = np.random.default_rng(0)
    position = rng.standard_normal((1500, 16)) * 5.0         # the same in every window, like Whisper's
    content_dir = np.zeros(16)
    content_dir[3] = 1.0
    said = [rng.standard_normal(1500) for _ in range(30)]
    windows = [position + s[:, None] * content_dir + 0.01 * rng.standard_normal((1500, 16)) for s in said]
    p = _fit_projection(windows, 2)
    assert p["mean"].shape == (1500, 16) and p["basis"].shape == (16, 2)
    first = (windows[0] - p["mean"]) @ p["basis"][:, 0] / p["scale"][0]
    assert abs(np.corrcoef(first, said[0])[0, 1]) > 0.95


@pytest.mark.slow
def test_content_targets_of_a_small_cache_with_whisper(tmp_path):
    """Whisper base's encoder over a cache of six short recordings: one float16 row per frame, finite, and
    a rebuilt utterance's targets are those of the first build (the projection is kept)."""
    import json

    import soundfile as sf

    from training.data.content import build_content_targets, load_content_targets
    from training.data.corpora import open_corpus
    from training.data.features import build_feature_cache
    from training.whisper import whisper_base_dir

    rng = np.random.default_rng(0)
    for k in range(3):
        (tmp_path / "corpus" / f"spk{k}").mkdir(parents=True)
        for u in range(2):
            t = np.arange(int(16000 * 1.5)) / 16000
            y = 0.2 * np.sin(2 * np.pi * (110 + 40 * k) * t * (1 + 0.1 * np.sin(3 * t + u))) \
                + 0.02 * rng.standard_normal(t.size)
            sf.write(tmp_path / "corpus" / f"spk{k}" / f"u{u}.wav", y.astype(np.float32), 16000)
    cache = tmp_path / "features"
    build_feature_cache(open_corpus(tmp_path / "corpus", dev_fraction=0.0, test_fraction=0.0), cache, jobs=1,
                        progress=False, log=lambda m: None, splits=["train"])
    meta = build_content_targets(cache, whisper_base_dir(), dim=4, splits=("train",), log=lambda m: None)
    frames = np.load(cache / "train" / "frames.npy", mmap_mode="r")
    targets = load_content_targets(cache, "train", frames.shape[0])
    assert targets.dtype == np.float16 and targets.shape == (frames.shape[0], 4)
    assert np.all(np.isfinite(targets)) and float(np.abs(targets).max()) > 0
    assert json.loads((cache / "content.json").read_text())["splits"]["train"] == frames.shape[0] == meta["splits"]["train"]
    first = np.array(targets)
    (cache / "train" / "content.npy").unlink()            # a lost split is written again, the same
    build_content_targets(cache, whisper_base_dir(), dim=4, splits=("train",), log=lambda m: None)
    np.testing.assert_allclose(load_content_targets(cache, "train", frames.shape[0]).astype(np.float32),
                               first.astype(np.float32), atol=2e-2)
