"""vc.exemplars: envelope coefficients and drawing decoded envelopes onto a target's own."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import speech


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
    assert draw_onto_exemplars(decoded, pool, speech, amount=0.0) is decoded
    assert draw_onto_exemplars(decoded, pool, np.zeros(6, bool)) is decoded


def test_conversion_uses_the_targets_envelopes(tiny):
    """File path and engine: the same target with envelopes converts differently from one without, and
    strength 0 (the source's own voice) ignores them."""
    from vc.conversion import convert_audio16k
    from vc.engine import StreamingConverter
    from vc.speakers import Speaker

    audio = speech(1.2)
    rng = np.random.default_rng(1)
    f = rng.standard_normal(8).astype(np.float32)
    envelopes = (rng.standard_normal((30, 48)) * 3).astype(np.float16)
    plain, with_env = Speaker(f), Speaker(f, envelopes=envelopes)
    a = convert_audio16k(audio, plain, tiny, n_iter=4)
    b = convert_audio16k(audio, with_env, tiny, n_iter=4)
    assert a.shape == b.shape and not np.allclose(a, b, atol=1e-3)
    np.testing.assert_array_equal(convert_audio16k(audio, plain, tiny, n_iter=4, strength=0.0),
                                  convert_audio16k(audio, with_env, tiny, n_iter=4, strength=0.0))
    s_plain = StreamingConverter(tiny, plain, n_iter=4).convert(audio)
    s_env = StreamingConverter(tiny, with_env, n_iter=4).convert(audio)
    assert not np.allclose(s_plain, s_env, atol=1e-3)
