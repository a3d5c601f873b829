"""vc.exemplars: envelope coefficients and drawing decoded envelopes onto a target's own."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import speech


def test_basis_is_orthonormal_and_keeps_smooth_envelopes():
    from vc.exemplars import N_COEFFS, dct_basis, envelope_coefficients
    from vc.pitch import smooth_across_frequency

    basis = dct_basis(200)
    np.testing.assert_allclose(basis.T @ basis, np.eye(N_COEFFS), atol=1e-5)
    bins = np.arange(200)
    frames = np.stack([-3 + np.sin(bins / 30.0 + p) - bins / 100.0 for p in (0.0, 1.0)]).astype(np.float32)
    rebuilt = envelope_coefficients(frames) @ basis.T
    envelope = smooth_across_frequency(frames)
    assert np.max(np.abs(rebuilt - envelope)) < 0.05 * np.ptp(envelope)


def test_draw_onto_exemplars_moves_speech_frames_only():
    from vc.exemplars import dct_basis, draw_onto_exemplars, envelope_coefficients
    from vc.pitch import smooth_across_frequency

    rng = np.random.default_rng(0)
    bins = np.arange(200)
    decoded = np.stack([-4 + 0.5 * np.cos(bins / (20.0 + i)) for i in range(6)]).astype(np.float32)
    decoded += 0.05 * rng.standard_normal(decoded.shape).astype(np.float32)   # fine structure
    wanted = (-3 + np.cos(bins / 22.0)).astype(np.float32)[None]               # near the decoded frames
    far = (3 + rng.standard_normal((10, 200))).astype(np.float32)              # nowhere near them
    pool = np.concatenate([np.repeat(envelope_coefficients(wanted), 4, axis=0), envelope_coefficients(far)])
    speech = np.array([True, True, False, True, False, True])
    out = draw_onto_exemplars(decoded, pool.astype(np.float16), speech, k=4)
    drawn = (pool[0] @ dct_basis(200).T)
    np.testing.assert_allclose(smooth_across_frequency(out[speech]), smooth_across_frequency(
        np.repeat(drawn[None], speech.sum(), axis=0) + (decoded[speech] - smooth_across_frequency(decoded[speech]))),
        atol=2e-2)
    np.testing.assert_array_equal(out[~speech], decoded[~speech])
    half = draw_onto_exemplars(decoded, pool.astype(np.float16), speech, k=4, amount=0.5)
    np.testing.assert_allclose(half[speech] - decoded[speech], 0.5 * (out[speech] - decoded[speech]), atol=1e-5)
    assert draw_onto_exemplars(decoded, pool, speech, k=4, amount=0.0) is decoded
    assert draw_onto_exemplars(decoded, pool, np.zeros(6, bool), k=4) is decoded


def test_draw_onto_exemplars_matches_by_code_when_codes_are_given():
    """With codes, a frame takes the envelopes spoken with its own z, not the ones that look most like it."""
    from vc.exemplars import dct_basis, draw_onto_exemplars, envelope_coefficients
    from vc.pitch import smooth_across_frequency

    bins = np.arange(200)
    decoded = np.stack([-4 + 0.5 * np.cos(bins / 20.0)] * 4).astype(np.float32)
    alike = (-4 + 0.5 * np.cos(bins / 21.0)).astype(np.float32)[None]     # near the decoded envelope
    other = (-1 + np.sin(bins / 9.0)).astype(np.float32)[None]             # far from it
    pool = np.concatenate([np.repeat(envelope_coefficients(alike), 4, axis=0),
                           np.repeat(envelope_coefficients(other), 4, axis=0)]).astype(np.float16)
    pool_z = np.concatenate([np.full((4, 3), 5.0), np.zeros((4, 3))]).astype(np.float16)
    codes = np.zeros((4, 3), np.float32)                                   # said like the "other" frames
    speech = np.ones(4, bool)
    basis = dct_basis(200)
    by_envelope = smooth_across_frequency(draw_onto_exemplars(decoded, pool, speech, k=4))
    by_code = smooth_across_frequency(draw_onto_exemplars(decoded, pool, speech, k=4, codes=codes,
                                                          exemplar_codes=pool_z))
    want_alike = pool[0].astype(np.float32) @ basis.T
    want_other = pool[4].astype(np.float32) @ basis.T
    gap = np.abs(want_alike - want_other).max()                           # about 2.3
    assert np.abs(by_envelope - want_alike).max() < 0.05 * gap
    assert np.abs(by_code - want_other).max() < 0.05 * gap


def test_codes_rank_only_the_nearest_envelopes_when_candidates_are_given():
    """envelope+phones: among the `candidates` nearest by envelope, the ones said alike; a frame said alike
    but far in envelope is not taken."""
    from vc.exemplars import dct_basis, draw_onto_exemplars, envelope_coefficients
    from vc.pitch import smooth_across_frequency

    bins = np.arange(200)
    decoded = np.stack([-4 + 0.5 * np.cos(bins / 20.0)] * 3).astype(np.float32)
    near_a = (-4 + 0.5 * np.cos(bins / 21.0)).astype(np.float32)[None]     # near, said otherwise
    near_b = (-4.2 + 0.5 * np.cos(bins / 19.0)).astype(np.float32)[None]   # near, said alike
    far = (-1 + np.sin(bins / 9.0)).astype(np.float32)[None]               # far, said alike
    pool = np.concatenate([envelope_coefficients(e) for e in (near_a, near_a, near_b, near_b, far, far)]
                          ).astype(np.float16)
    pool_codes = np.array([[1, 0], [1, 0], [0, 1], [0, 1], [0, 1], [0, 1]], np.float16)
    codes = np.tile(np.array([[0, 1]], np.float32), (3, 1))
    speech = np.ones(3, bool)
    drawn = smooth_across_frequency(draw_onto_exemplars(decoded, pool, speech, k=2, codes=codes,
                                                        exemplar_codes=pool_codes, candidates=4))
    want = pool[2].astype(np.float32) @ dct_basis(200).T
    assert np.abs(drawn - want).max() < 0.05


def test_envelope_map_learns_a_linear_map_and_refuses_mismatched_frames():
    from vc.exemplars import fit_envelope_map, predict_envelopes

    rng = np.random.default_rng(0)
    decoded = rng.standard_normal((500, 6)) * np.array([1.0, 2.0, 0.5, 3.0, 1.0, 0.1])
    true_map = rng.standard_normal((6, 6))
    real = decoded @ true_map + np.arange(6) - 2.0
    envelope_map = fit_envelope_map(decoded, real, ridge=1e-6)
    assert envelope_map.shape == (7, 6) and envelope_map.dtype == np.float32
    np.testing.assert_allclose(predict_envelopes(decoded, envelope_map), real, atol=1e-3)
    # the ridge pulls towards no map at all, but a few hundred frames outweigh it
    loose = fit_envelope_map(decoded, real + 0.3 * rng.standard_normal(real.shape))
    assert np.sqrt(np.mean((predict_envelopes(decoded, loose) - real) ** 2)) < 0.1
    with pytest.raises(ValueError, match="one shape"):
        fit_envelope_map(decoded, real[:-1])
    with pytest.raises(ValueError, match="one shape"):
        fit_envelope_map(decoded[:0], real[:0])


def test_prediction_blends_the_predicted_envelope_with_the_exemplars():
    """prediction 0: the exemplars' mean; 1: the envelope the map predicts from the decoded one; between: the
    mix, in coefficients."""
    from vc.exemplars import dct_basis, draw_onto_exemplars, envelope_coefficients, predict_envelopes
    from vc.pitch import smooth_across_frequency

    rng = np.random.default_rng(2)
    bins = np.arange(200)
    decoded = np.stack([-4 + 0.5 * np.cos(bins / (20.0 + i)) for i in range(5)]).astype(np.float32)
    pool = envelope_coefficients((-2 + rng.standard_normal((12, 200))).astype(np.float32)).astype(np.float16)
    envelope_map = np.concatenate([0.5 * np.eye(48), np.full((1, 48), 0.3)]).astype(np.float32)
    speech = np.ones(5, bool)
    basis = dct_basis(200)
    exemplars_only = draw_onto_exemplars(decoded, pool, speech, k=3)
    np.testing.assert_array_equal(draw_onto_exemplars(decoded, pool, speech, k=3, envelope_map=envelope_map,
                                                      prediction=0.0), exemplars_only)
    predicted = draw_onto_exemplars(decoded, pool, speech, k=3, envelope_map=envelope_map, prediction=1.0)
    want = predict_envelopes(smooth_across_frequency(decoded) @ basis, envelope_map) @ basis.T
    np.testing.assert_allclose(smooth_across_frequency(predicted), smooth_across_frequency(
        want + decoded - smooth_across_frequency(decoded)), atol=2e-2)
    half = draw_onto_exemplars(decoded, pool, speech, k=3, envelope_map=envelope_map, prediction=0.5)
    np.testing.assert_allclose(half, 0.5 * (predicted + exemplars_only), atol=1e-4)


def test_the_targets_envelope_map_is_fitted_on_its_own_frames_once(tiny, tmp_path):
    """The map takes the target's decoded enrolment envelopes nearer to its real ones than they were, is
    computed once per model and speaker, and needs the frames' z."""
    import soundfile as sf

    from vc.exemplars import envelope_coefficients, predict_envelopes
    from vc.speakers import Speaker, enroll
    from vc.stages import target_envelope_map

    sf.write(tmp_path / "target.wav", speech(3.0, seed=4, f0=180.0, formant=900.0), 16000)
    enrolment = enroll([tmp_path / "target.wav"], tiny)
    target = Speaker(enrolment.embedding, envelopes=enrolment.envelopes, envelope_z=enrolment.envelope_z)
    envelope_map = target_envelope_map(tiny, target)
    assert target_envelope_map(tiny, target) is envelope_map
    z = enrolment.envelope_z.astype(np.float32)
    decoded = tiny.denormalise(tiny.decode(target.f[None], z[None]))[0]
    coefficients = envelope_coefficients(decoded)
    real = enrolment.envelopes.astype(np.float32)
    before = np.mean((coefficients - real) ** 2)
    after = np.mean((predict_envelopes(coefficients, envelope_map) - real) ** 2)
    assert after < 0.5 * before
    assert target_envelope_map(tiny, Speaker(target.f, envelopes=target.envelopes)) is None
    # one enrolled frame still gives a finite map (the ridge holds what one frame cannot tell)
    one = Speaker(target.f, envelopes=target.envelopes[:1], envelope_z=target.envelope_z[:1])
    assert np.all(np.isfinite(target_envelope_map(tiny, one)))


def test_conversion_uses_the_targets_envelopes(tiny, monkeypatch):
    """File path and engine: the same target with envelopes converts differently from one without, and
    strength 0 (the source's own voice) ignores them."""
    from vc.conversion import convert_at_model_rate
    from vc.engine import EngineError, StreamingConverter
    from vc.speakers import Speaker, SpeakerError

    audio = speech(1.2)
    rng = np.random.default_rng(1)
    f = rng.standard_normal(8).astype(np.float32)
    envelopes = (rng.standard_normal((30, 48)) * 3).astype(np.float16)
    plain, with_env = Speaker(f), Speaker(f, envelopes=envelopes)
    by_envelope = {"n_iter": 4, "exemplar_match": "envelope", "envelope_prediction": 0.0}
    a = convert_at_model_rate(audio, plain, tiny, **by_envelope)
    b = convert_at_model_rate(audio, with_env, tiny, **by_envelope)
    assert a.shape == b.shape and not np.allclose(a, b, atol=1e-3)
    np.testing.assert_array_equal(convert_at_model_rate(audio, plain, tiny, strength=0.0, **by_envelope),
                                  convert_at_model_rate(audio, with_env, tiny, strength=0.0, **by_envelope))
    s_plain = StreamingConverter(tiny, plain, **by_envelope).convert(audio)
    s_env = StreamingConverter(tiny, with_env, **by_envelope).convert(audio)
    assert not np.allclose(s_plain, s_env, atol=1e-3)
    # with the z of each envelope's frame, the default ("z") picks exemplars by what is said, on both paths
    by_code = Speaker(f, envelopes=envelopes, envelope_z=(rng.standard_normal((30, 4)) * 2).astype(np.float16))
    np.testing.assert_array_equal(convert_at_model_rate(audio, by_code, tiny, **by_envelope), b)
    assert not np.allclose(convert_at_model_rate(audio, by_code, tiny, n_iter=4), b, atol=1e-3)
    assert not np.allclose(StreamingConverter(tiny, by_code, n_iter=4).convert(audio), s_env,
                           atol=1e-3)
    # "z" asked of envelopes that have no z: one clear error, not a quiet fall back to matching by envelope
    with pytest.raises(SpeakerError, match="envelope_z"):
        convert_at_model_rate(audio, with_env, tiny, n_iter=4)
    with pytest.raises(EngineError, match="envelope_z"):
        StreamingConverter(tiny, with_env, n_iter=4)


def _pulse_frames(hz: float, n: int, cfg) -> np.ndarray:
    """n frames of a pulse train's log spectrum at `hz` over a sloping envelope."""
    from vc.pitch import harmonic_fine_structure

    fine, _ = harmonic_fine_structure(np.full(n, hz), np.ones(n, bool), cfg)
    return (fine - 3.0 - np.arange(fine.shape[1]) / 80.0).astype(np.float32)


def test_voiced_exemplar_set_splits_frames_into_envelope_and_fine_structure(tiny):
    from vc.exemplars import envelope_coefficients, voiced_exemplar_set
    from vc.pitch import smooth_across_frequency

    cfg = tiny.feature_config
    frames = np.concatenate([np.repeat(_pulse_frames(hz, 1, cfg), 40, axis=0) for hz in (110.0, 220.0)])
    f0 = np.repeat([110.0, 220.0], 40)
    kept = voiced_exemplar_set(frames, f0, max_count=30)
    assert kept.envelopes.dtype == kept.f0.dtype == kept.fine.dtype == np.float16
    assert kept.f0.shape == (30,) and kept.fine.shape == (30, 200)
    assert set(np.round(kept.f0.astype(np.float64))) == {110.0, 220.0}      # spread over all frames
    assert not np.all(np.diff(kept.f0.astype(np.float64)) >= 0)            # not in time order
    row = int(np.flatnonzero(kept.f0 == np.float16(220.0))[0])
    np.testing.assert_allclose(kept.envelopes[row], envelope_coefficients(frames[-1:])[0], rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(kept.fine[row], frames[-1] - smooth_across_frequency(frames[-1:])[0], atol=5e-3)
    assert voiced_exemplar_set(frames[:0], f0[:0]) is None


def test_voiced_fine_structure_takes_the_nearest_pitch_and_stretches_it(tiny, monkeypatch):
    """A frame wanting 150 Hz gets the 140 Hz exemplar (not the 260 Hz one) stretched to 150 Hz: its
    harmonic peaks are where a 150 Hz pulse train's are; unvoiced frames get none."""
    from vc.exemplars import voiced_exemplar_set, voiced_fine_structure
    from vc.pitch import harmonic_fine_structure

    cfg = tiny.feature_config
    bank = voiced_exemplar_set(np.concatenate([_pulse_frames(140.0, 5, cfg), _pulse_frames(260.0, 5, cfg)]),
                               np.repeat([140.0, 260.0], 5))
    envelope = np.full((4, 200), -4.0, np.float32)
    f0 = np.array([150.0, 0.0, 150.0, 250.0])
    voiced = np.array([True, False, True, True])
    fine = voiced_fine_structure(envelope, f0, voiced, bank, cfg, near=32)
    assert np.all(fine[1] == 0.0)
    for t, hz in ((0, 150.0), (3, 250.0)):
        wanted = harmonic_fine_structure(np.array([hz]), np.array([True]), cfg)[0][0]
        other = harmonic_fine_structure(np.array([hz * 1.3]), np.array([True]), cfg)[0][0]
        low = slice(0, 100)   # the stretch moves the top harmonics out of range
        assert np.corrcoef(fine[t, low], wanted[low])[0, 1] > 0.7
        assert np.corrcoef(fine[t, low], other[low])[0, 1] < 0.3
    # Long files are matched a block of frames at a time, with the same result.
    import vc.exemplars

    monkeypatch.setattr(vc.exemplars, "QUERY_BLOCK", 1)
    np.testing.assert_array_equal(voiced_fine_structure(envelope, f0, voiced, bank, cfg, near=32), fine)


def test_voiced_fine_structure_averages_the_nearest_pitches_each_stretched(tiny):
    """per_frame 2: the mean of the two exemplars nearest in F0, each stretched to the frame's own F0; the
    far one never enters; per_frame 1 is the nearest alone; never more than the `near` candidates."""
    from vc.exemplars import VoicedExemplars, stretch_along_frequency, voiced_fine_structure

    cfg = tiny.feature_config
    rng = np.random.default_rng(3)
    fine = rng.standard_normal((3, 200)).astype(np.float16)
    envelopes = np.zeros((3, 48), np.float16)
    envelopes[2, 0] = 100.0   # the 300 Hz frame is also the farthest in envelope: never among near=2
    bank = VoicedExemplars(envelopes, np.array([150.0, 160.0, 300.0], np.float16), fine)
    envelope = np.full((1, 200), -4.0, np.float32)
    f0, voiced = np.array([152.0]), np.array([True])
    stretched = [stretch_along_frequency(fine[i:i + 1].astype(np.float32), np.array([152.0 / hz]), cfg)[0]
                 for i, hz in enumerate((150.0, 160.0))]
    one = voiced_fine_structure(envelope, f0, voiced, bank, cfg, near=32)
    np.testing.assert_allclose(one[0], stretched[0], atol=1e-6)
    two = voiced_fine_structure(envelope, f0, voiced, bank, cfg, near=32, per_frame=2)
    np.testing.assert_allclose(two[0], (stretched[0] + stretched[1]) / 2, atol=1e-6)
    np.testing.assert_allclose(voiced_fine_structure(envelope, f0, voiced, bank, cfg, near=2, per_frame=3), two,
                               atol=1e-6)


def test_the_envelope_under_the_targets_harmonics_keeps_its_formant_peaks(tiny):
    """envelope_bins: a narrow formant peak of the converted envelope survives under the target's harmonics
    (5 bins keep more of it than the 9 of the fine structures' split); the source's own fine structure keeps
    the split it was cut with, whatever envelope_bins says."""
    from vc.exemplars import voiced_exemplar_set
    from vc.pitch import Register
    from vc.stages import fine_structure_of, rebuild_harmonics

    cfg = tiny.feature_config
    bank = voiced_exemplar_set(_pulse_frames(150.0, 8, cfg), np.full(8, 150.0))
    bins = np.arange(200)
    envelope = np.tile(-6.0 + 3.0 * np.exp(-0.5 * ((bins - 60) / 1.5) ** 2), (40, 1)).astype(np.float32)
    f0, voiced = np.full(40, 150.0), np.ones(40, bool)
    register = Register.of(f0, voiced)
    assert register is not None

    def peak(**kw):
        frames, _ = rebuild_harmonics(envelope, f0, voiced, source=register, target=register, cfg=cfg, **kw)
        # the peak's height over its surroundings, read through the harmonics by averaging across them
        smooth = frames.mean(axis=0)
        return float(smooth[56:65].max() - np.median(smooth[20:40]))

    narrow, split = peak(voiced_exemplars=bank, envelope_bins=5), peak(voiced_exemplars=bank, envelope_bins=9)
    assert narrow > split + 0.3
    assert peak(voiced_exemplars=bank, envelope_bins=1) > narrow
    own = {"source_fine": fine_structure_of(_pulse_frames(150.0, 40, cfg))}
    np.testing.assert_array_equal(rebuild_harmonics(envelope, f0, voiced, source=register, target=register,
                                                    cfg=cfg, envelope_bins=5, **own)[0],
                                  rebuild_harmonics(envelope, f0, voiced, source=register, target=register,
                                                    cfg=cfg, envelope_bins=9, **own)[0])


def test_conversion_uses_the_targets_voiced_frames(tiny):
    """File path and engine, fine_structure "target": a target with voiced frames converts differently from
    one without; without harmonics, or with the source's own fine structure, there is no difference."""
    from vc.conversion import convert_at_model_rate
    from vc.engine import StreamingConverter
    from vc.exemplars import voiced_exemplar_set
    from vc.pitch import Register
    from vc.speakers import Speaker, SpeakerError

    audio = speech(1.2)
    cfg = tiny.feature_config
    f = np.random.default_rng(1).standard_normal(8).astype(np.float32)
    register = Register(np.log(180.0), 0.05)
    bank = voiced_exemplar_set(np.concatenate([_pulse_frames(hz, 8, cfg) for hz in (160.0, 200.0)]),
                               np.repeat([160.0, 200.0], 8))
    plain, voiced = Speaker(f, register), Speaker(f, register, voiced=bank)
    a = convert_at_model_rate(audio, plain, tiny, n_iter=4, fine_structure="target")
    b = convert_at_model_rate(audio, voiced, tiny, n_iter=4, fine_structure="target")
    assert a.shape == b.shape and not np.allclose(a, b, atol=1e-3)
    bare = {"n_iter": 4, "harmonics": False, "fine_structure": "target"}
    np.testing.assert_array_equal(convert_at_model_rate(audio, plain, tiny, **bare),
                                  convert_at_model_rate(audio, voiced, tiny, **bare))
    s_plain = StreamingConverter(tiny, plain, n_iter=4, fine_structure="target").convert(audio)
    s_voiced = StreamingConverter(tiny, voiced, n_iter=4, fine_structure="target").convert(audio)
    assert not np.allclose(s_plain, s_voiced, atol=1e-3)
    np.testing.assert_array_equal(convert_at_model_rate(audio, plain, tiny, n_iter=4, fine_structure="source"),
                                  convert_at_model_rate(audio, voiced, tiny, n_iter=4, fine_structure="source"))
