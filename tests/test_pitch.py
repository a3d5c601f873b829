"""vc.pitch: YIN F0 tracking, register transposition, rebuilt harmonics; and conversion that uses them."""

from __future__ import annotations

import numpy as np
import pytest

SR = 16000
HOP = 160


def harmonic_tone(seconds: float, f0, seed: int = 0) -> np.ndarray:
    """Sum of harmonics at f0 (Hz, scalar or per sample) with a little noise."""
    n = int(seconds * SR)
    hz = np.broadcast_to(np.asarray(f0, float), (n,))
    phase = 2 * np.pi * np.cumsum(hz) / SR
    y = sum(np.sin(k * phase) / k for k in range(1, 25) if k * hz.max() < SR / 2)
    noise = 0.002 * np.random.default_rng(seed).standard_normal(n)
    return (0.3 * y / np.max(np.abs(y)) + noise).astype(np.float32)


@pytest.mark.parametrize("f0", [75.0, 118.0, 220.0, 390.0])
def test_yin_finds_steady_pitch(f0):
    from vc.pitch import yin

    est, voiced = yin(harmonic_tone(1.0, f0), SR, HOP)
    assert est.shape == voiced.shape == (1 + SR // HOP,)
    inner = voiced[10:-10]
    assert inner.mean() > 0.95
    np.testing.assert_allclose(est[10:-10][inner], f0, rtol=0.01)


def test_yin_follows_a_glide_and_ignores_noise_and_silence():
    from vc.pitch import yin

    glide = np.geomspace(110.0, 220.0, SR)         # one octave up in a second
    noise = 0.1 * np.random.default_rng(1).standard_normal(SR // 2).astype(np.float32)
    silence = np.zeros(SR // 2, np.float32)
    est, voiced = yin(np.concatenate([harmonic_tone(1.0, glide), noise, silence]), SR, HOP)
    frames = np.arange(est.size) * HOP
    tone = (frames > 0.05 * SR) & (frames < 0.95 * SR)
    truth = np.interp(frames[tone], np.arange(SR), glide)
    assert voiced[tone].mean() > 0.95
    np.testing.assert_allclose(est[tone][voiced[tone]], truth[voiced[tone]], rtol=0.02)
    assert voiced[frames > 1.1 * SR].mean() < 0.05   # white noise and silence are not voiced


def test_yin_rejects_bad_arguments():
    from vc.pitch import yin

    with pytest.raises(ValueError, match="mono"):
        yin(np.zeros((100, 2)), SR, HOP)
    with pytest.raises(ValueError, match="fmin"):
        yin(np.zeros(1000), SR, HOP, fmin=500, fmax=400)


def test_register_and_transpose():
    from vc.pitch import Register, transpose

    f0 = np.array([100.0, 0.0, 200.0, 141.42])
    voiced = f0 > 0
    source = Register.of(f0, voiced, min_frames=3)
    assert source.log_mean == pytest.approx(np.log(141.42), abs=1e-4)
    assert Register.of(f0, voiced, min_frames=4) is None         # too few voiced frames to say
    target = Register(np.log(282.84), 2 * source.log_std)
    moved = transpose(f0, voiced, source, target)
    assert moved[1] == 0.0                                       # unvoiced stays unvoiced
    # Contour kept, centred on 282.84 Hz, spread doubled: 100 Hz was half an octave down, now a full one.
    np.testing.assert_allclose(moved[[0, 2, 3]], [141.42, 565.69, 282.84], rtol=1e-3)


def test_harmonic_fine_structure_peaks_at_the_harmonics():
    from vc.dsp import FeatureConfig
    from vc.pitch import harmonic_fine_structure

    cfg = FeatureConfig()
    T = 50
    f0 = np.full(T, 200.0)
    voiced = np.ones(T, bool)
    voiced[:10] = False
    fine, _ = harmonic_fine_structure(f0, voiced, cfg)
    assert fine.shape == (T, cfg.n_features)
    assert np.all(fine[:10] == 0.0)
    frame = fine[30]
    bin_hz = cfg.sr / cfg.n_fft                                   # 40 Hz; feature column k is bin k + 1
    harmonics = np.arange(200, 7000, 200) / bin_hz - 1
    between = harmonics[:-1] + 2.5                                 # half way to the next harmonic
    assert frame[harmonics.astype(int)].mean() > frame[between.astype(int)].mean() + 2.0


def test_harmonic_fine_structure_in_pieces_equals_one_call():
    """A stream builds the fine structure hop by hop, carrying the pulse train's phase: same frames."""
    from vc.dsp import FeatureConfig
    from vc.pitch import harmonic_fine_structure

    cfg = FeatureConfig()
    rng = np.random.default_rng(4)
    f0 = 120.0 * np.exp(np.cumsum(0.01 * rng.standard_normal(230)))
    voiced = np.sin(np.arange(230) / 9.0) > -0.5
    whole, end_phase = harmonic_fine_structure(f0, voiced, cfg)
    pieces, phase, cuts = [], 0.0, [0, 20, 24, 61, 100, 230]
    for a, b in zip(cuts[:-1], cuts[1:]):
        fine, phase = harmonic_fine_structure(f0[a:b], voiced[a:b], cfg, phase)
        pieces.append(fine)
    np.testing.assert_allclose(np.concatenate(pieces), whole, atol=1e-4)
    assert phase == pytest.approx(end_phase, abs=1e-9)
    assert np.abs(whole[voiced]).mean() > 0.3 and not whole[~voiced].any()


def speech_turns(seed: int = 0) -> np.ndarray:
    """Syllables of a gliding voice with pauses, then a second, higher voice (a speaker change)."""
    rng = np.random.default_rng(seed)
    pieces = []
    for k, base in enumerate([110.0] * 6 + [230.0] * 6):
        n = int(rng.uniform(0.15, 0.35) * SR)
        contour = base * np.exp(0.08 * np.sin(np.linspace(0, np.pi * rng.uniform(1, 3), n)))
        pieces += [harmonic_tone(n / SR, contour, seed=k) * rng.uniform(0.3, 1.0), np.zeros(int(0.12 * SR), np.float32)]
    return np.concatenate(pieces)


@pytest.mark.parametrize("block,hop", [(160, 20), (3200, 20), (777, 20), (160, 4)])
def test_streaming_yin_gives_the_whole_file_track(block, hop):
    """Frame for frame the same analysis as the whole-file tracker; only the look-ahead-limited decisions
    (runs and medians near the newest frame of a take, the loudness floor) may differ, and rarely do."""
    from vc.pitch import yin
    from vc.streaming_pitch import StreamingPitch

    y = speech_turns()
    whole_f0, whole_voiced = yin(y, SR, HOP)
    tracker = StreamingPitch(SR, HOP)
    assert tracker.latency_samples == 401                  # 802-sample frames at the 60 Hz floor
    f0s, flags = [], []
    for i in range(0, y.size + tracker.span, block):       # then zeros, as the whole-file tracker pads
        chunk = y[i:i + block] if i < y.size else np.zeros(block, np.float32)
        tracker.push(chunk)
        while tracker.ready >= hop:                         # a hop's frames at a time, like the engine
            got = tracker.take(hop)
            f0s.append(got[0])
            flags.append(got[1])
    f0, voiced = np.concatenate(f0s)[:whole_f0.size], np.concatenate(flags)[:whole_f0.size]
    assert f0.size >= whole_f0.size - hop
    whole_f0, whole_voiced = whole_f0[:f0.size], whole_voiced[:f0.size]
    assert (voiced == whole_voiced).mean() > 0.97
    both = voiced & whole_voiced
    assert both.sum() > 150
    assert np.median(np.abs(f0[both] / whole_f0[both] - 1)) < 0.005
    with pytest.raises(ValueError, match="ready"):
        tracker.take(tracker.ready + 1)


def test_streaming_yin_with_four_frames_of_look_ahead_is_exact():
    from vc.pitch import yin
    from vc.streaming_pitch import StreamingPitch

    y = speech_turns(seed=3)[: 2 * SR]
    whole_f0, whole_voiced = yin(y, SR, HOP)
    tracker = StreamingPitch(SR, HOP, lookahead_frames=4)
    tracker.push(y)
    n = tracker.ready           # the last frames read the end padding, which the stream has not seen yet
    assert n >= whole_f0.size - 7
    f0, voiced = tracker.take(n)
    np.testing.assert_array_equal(voiced, whole_voiced[:n])
    np.testing.assert_allclose(f0, whole_f0[:n], rtol=1e-9)


def test_running_register_settles_and_follows_a_new_speaker():
    from vc.pitch import Register
    from vc.streaming_pitch import RunningRegister

    rng = np.random.default_rng(1)
    register = RunningRegister()
    assert register.current() is None
    low = 110.0 * np.exp(0.1 * rng.standard_normal(300))      # 3 s of voicing around 110 Hz
    register.update(low, np.ones(300, bool))
    settled = register.current()
    assert np.exp(settled.log_mean) == pytest.approx(110.0, rel=0.03)
    assert settled.log_std == pytest.approx(Register.of(low, low > 0).log_std, rel=0.2)
    high = 230.0 * np.exp(0.1 * rng.standard_normal(300))     # then 3 s of a voice an octave up
    register.update(high[:100], np.ones(100, bool))
    assert np.exp(register.current().log_mean) < 160.0         # one second in: still mostly the old voice
    register.update(high[100:], np.ones(200, bool))
    assert np.exp(register.current().log_mean) == pytest.approx(230.0, rel=0.05)
    register.reset()
    register.update(np.full(5, 200.0), np.ones(5, bool))
    assert register.current() is None                          # 5 frames are too few to say


def test_rebuilt_harmonics_sit_at_the_target_register(tmp_path):
    from helpers import tiny_model_dir
    from vc.conversion import convert_at_model_rate
    from vc.excitation import fine_structure_at_ratio
    from vc.stages import fine_structure_of, rebuild_harmonics
    from vc.dsp import griffinlim, log_magnitude, magnitude_from_features
    from vc.model import load_model
    from vc.pitch import Register, smooth_across_frequency, yin
    from vc.speakers import Speaker

    model = load_model(tiny_model_dir(tmp_path / "model", f_dim=6, seed=5)[0], device="cpu", threads=1)
    cfg = model.feature_config
    vibrato = 140.0 * (1 + 0.05 * np.sin(2 * np.pi * 3 * np.arange(2 * SR) / SR))
    source = harmonic_tone(2.0, vibrato)
    f = np.linspace(-1, 1, 6).astype(np.float32)
    # A speech-like envelope (the source's own, smoothed) stands in for the decoder's output.
    envelope = smooth_across_frequency(log_magnitude(source, cfg=cfg))

    def with_harmonics(envelope, audio, target, **fine):
        f0, voiced = yin(audio, SR, HOP)
        f0, voiced = f0[:envelope.shape[0]], voiced[:envelope.shape[0]]
        return rebuild_harmonics(envelope, f0, voiced, source=Register.of(f0, voiced), target=target.register,
                                 cfg=cfg, **fine)[0]

    def median_f0(frames):
        audio = griffinlim(magnitude_from_features(frames, cfg=cfg), n_iter=16, init="pghi", length=source.size)
        est, voiced = yin(audio, SR, HOP)
        assert voiced.mean() > 0.8
        return float(np.median(est[voiced]))

    up = with_harmonics(envelope, source, Speaker(f, Register(np.log(230.0), 0.03)))
    assert median_f0(up) == pytest.approx(230.0, rel=0.03)
    # The source's own fine structure, analysed again at the moved pitch (fine_structure "source").
    own = {"source_fine": fine_structure_of(log_magnitude(source, cfg=cfg)),
           "source_at_pitch": lambda rows, ratio: fine_structure_at_ratio(source, rows, ratio, cfg)}
    assert median_f0(with_harmonics(envelope, source, Speaker(f, Register(np.log(230.0), 0.03)), **own)) \
        == pytest.approx(230.0, rel=0.03)
    kept = with_harmonics(envelope, source, Speaker(f))       # no register: the source's pitch
    assert median_f0(kept) == pytest.approx(140.0, rel=0.03)
    whisper = 0.05 * np.random.default_rng(2).standard_normal(2 * SR).astype(np.float32)
    np.testing.assert_array_equal(with_harmonics(envelope, whisper, Speaker(f)), envelope)

    # The whole path: the register changes the output, harmonics=False leaves the model's envelope alone.
    target = Speaker(f, Register(np.log(230.0), 0.03))
    with_pitch = convert_at_model_rate(source, target, model, n_iter=4)
    plain = convert_at_model_rate(source, target, model, n_iter=4, harmonics=False)
    assert with_pitch.shape == plain.shape == source.shape
    assert np.max(np.abs(with_pitch - plain)) > 1e-2


def test_yin_in_blocks_matches_one_pass(monkeypatch):
    """Long files are analysed a block of frames at a time (bounded memory) with the same result."""
    import vc.pitch as pitch

    y = np.concatenate([harmonic_tone(1.3, 150.0), np.zeros(SR // 3, np.float32), harmonic_tone(1.0, 260.0, seed=1)])
    one_pass = pitch.yin(y, SR, HOP)
    monkeypatch.setattr(pitch, "FRAMES_PER_BLOCK", 37)
    blocked = pitch.yin(y, SR, HOP)
    np.testing.assert_array_equal(blocked[1], one_pass[1])
    np.testing.assert_allclose(blocked[0], one_pass[0], rtol=1e-9)
    assert one_pass[1].sum() > 150
