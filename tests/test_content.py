"""training.data.content: packing utterances into Whisper windows, finding their frames, the projection."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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
