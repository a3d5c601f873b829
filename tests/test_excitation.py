"""vc.excitation: the source's own fine structure analysed again at a moved pitch (fine_structure "source")."""

from __future__ import annotations

import numpy as np
import pytest

from test_pitch import SR, harmonic_tone


def _fine(y):
    from vc.dsp import FeatureConfig, log_magnitude
    from vc.stages import fine_structure_of

    return fine_structure_of(log_magnitude(y, cfg=FeatureConfig()))


def _correlation(a, b, bins):
    return float(np.corrcoef(a[:, :bins].ravel(), b[:, :bins].ravel())[0, 1])


@pytest.mark.parametrize("f0, ratio", [(110.0, 2.0), (110.0, 1.6), (260.0, 0.6)])
def test_reanalysis_looks_like_a_voice_at_the_moved_pitch(f0, ratio):
    """A low voice raised (or a high one lowered) should show the harmonics a real voice at ratio x F0
    shows through the model's window, which the stretch of its log fine structure does not manage."""
    from vc.dsp import FeatureConfig
    from vc.excitation import fine_structure_at_ratio
    from vc.exemplars import stretch_along_frequency

    cfg = FeatureConfig()
    frames = np.arange(20, 80)
    moved = fine_structure_at_ratio(harmonic_tone(1.0, f0), frames, np.full(frames.size, ratio), cfg)
    real = _fine(harmonic_tone(1.0, f0 * ratio))[frames]
    stretched = stretch_along_frequency(_fine(harmonic_tone(1.0, f0))[frames], np.full(frames.size, ratio), cfg)
    bins = int(cfg.n_features * min(1.0, ratio)) - 5          # what the source has below its Nyquist
    assert _correlation(moved, real, bins) > 0.85
    assert _correlation(moved, real, bins) > _correlation(stretched, real, bins) + 0.03


def test_ratio_one_is_the_sources_own_fine_structure():
    from vc.dsp import FeatureConfig
    from vc.excitation import fine_structure_at_ratio

    y = harmonic_tone(1.0, np.geomspace(120.0, 180.0, SR))
    frames = np.arange(5, 95)
    same = fine_structure_at_ratio(y, frames, np.ones(frames.size), FeatureConfig())
    np.testing.assert_allclose(same, _fine(y)[frames], atol=2e-3)


def test_beyond_the_widest_window_the_rest_is_stretched():
    """Ratio 3 reads no further than ratio 2 (a stream's pitch tracker waits for no more), and the result
    is ratio 2's analysis stretched by 1.5."""
    from vc.dsp import FeatureConfig
    from vc.excitation import MAX_RATIO, fine_structure_at_ratio
    from vc.exemplars import stretch_along_frequency

    cfg = FeatureConfig()
    y = harmonic_tone(0.5, 100.0)
    frames = np.arange(10, 40)
    at_max = fine_structure_at_ratio(y, frames, np.full(frames.size, MAX_RATIO), cfg)
    beyond = fine_structure_at_ratio(y, frames, np.full(frames.size, 1.5 * MAX_RATIO), cfg)
    np.testing.assert_allclose(beyond, stretch_along_frequency(at_max, np.full(frames.size, 1.5), cfg), atol=1e-5)
    assert np.isfinite(fine_structure_at_ratio(y, frames, np.full(frames.size, 0.3), cfg)).all()


def test_a_stream_of_blocks_analyses_as_the_whole_signal_does():
    from vc.dsp import FeatureConfig
    from vc.excitation import MAX_RATIO, RecentAudio, fine_structure_at_ratio

    cfg = FeatureConfig()
    y = harmonic_tone(1.0, np.geomspace(90.0, 250.0, SR), seed=3)
    rng = np.random.default_rng(0)
    ratio = rng.uniform(0.5, 2.5, 1 + y.size // cfg.hop_length)
    whole = fine_structure_at_ratio(y, np.arange(ratio.size), ratio, cfg)
    recent, done, pushed, got = RecentAudio(cfg), 0, 0, []
    reach = int(np.ceil(0.5 * cfg.win_length * MAX_RATIO))
    while pushed < y.size:
        block = int(rng.integers(1, 900))
        recent.push(y[pushed:pushed + block])
        pushed += block
        # the frames whose widest window has arrived (all of them once the signal has ended)
        ready = ratio.size if pushed >= y.size else max(done, (pushed - reach) // cfg.hop_length)
        if ready > done:
            rows = np.arange(done, ready)
            got.append(recent.fine_structure_at_ratio(rows, ratio[rows]))
            done = ready
            recent.keep_from_frame(done)
    np.testing.assert_allclose(np.concatenate(got), whole, atol=1e-5)


def test_the_targets_fine_structure_blends_into_the_sources_in_voiced_frames():
    """target_fine_share w: voiced frames carry (1 - w) x the source's re-analysed fine structure + w x the
    target's own; unvoiced frames keep the source's."""
    from vc.dsp import FeatureConfig, log_magnitude
    from vc.excitation import fine_structure_at_ratio
    from vc.exemplars import voiced_exemplar_set
    from vc.pitch import Register, smooth_across_frequency, yin
    from vc.stages import fine_structure_of, rebuild_harmonics

    cfg = FeatureConfig()
    source = np.concatenate([harmonic_tone(1.0, 130.0), 0.05 * np.random.default_rng(4).standard_normal(SR // 2)
                             .astype(np.float32)])
    frames = log_magnitude(source, cfg=cfg)
    f0, voiced = yin(source, SR, cfg.hop_length)
    f0, voiced = f0[:frames.shape[0]], voiced[:frames.shape[0]]
    theirs = harmonic_tone(1.0, 210.0, seed=5)
    their_f0, their_voiced = yin(theirs, SR, cfg.hop_length)
    their_frames = log_magnitude(theirs, cfg=cfg)[:their_f0.size]
    bank = voiced_exemplar_set(their_frames[their_voiced], their_f0[their_voiced])
    envelope = smooth_across_frequency(frames)

    def rebuilt(share):
        return rebuild_harmonics(envelope, f0, voiced, source=Register.of(f0, voiced),
                                 target=Register(np.log(210.0), 0.03), cfg=cfg, voiced_exemplars=bank,
                                 source_fine=fine_structure_of(frames), target_share=share,
                                 source_at_pitch=lambda rows, ratio: fine_structure_at_ratio(source, rows, ratio, cfg))[0]

    own, blended, target = rebuilt(0.0), rebuilt(0.3), rebuilt(1.0)
    assert voiced.sum() > 50 and (~voiced).sum() > 30
    assert np.abs(own[voiced] - target[voiced]).max() > 1.0
    np.testing.assert_allclose(blended[voiced], 0.7 * own[voiced] + 0.3 * target[voiced], atol=1e-4)
    np.testing.assert_array_equal(blended[~voiced], own[~voiced])
