"""The target's own spectral envelopes (exemplars), and drawing the converted envelope onto them.

The decoder predicts the mean log spectrum given (f, z). Averaged over everything z leaves open, its
envelopes are smoother than any real frame, and a speaker-verification network hears that smoothing as
another voice: held-out human utterances resynthesised through the default model with their own f and z
keep a cosine of 0.69 to their speaker, against 0.80 for their own envelopes under the same rebuilt
harmonics (tools/eval_resynthesis.py). So after decoding, the envelope of every speech frame is replaced
by the mean of the K target envelopes nearest to it among up to MAX_EXEMPLARS stored at enrolment: the
DSAE decides what is said and in which voice, the target's real frames supply the detail the decoder
averages away (the matching step of kNN-VC, Baas, van Niekerk & Kamper 2023, applied to the DSAE's output
rather than to self-supervised features). Envelopes are compared and stored as their first N_COEFFS
orthonormal DCT-II coefficients: the envelope (`vc.pitch.smooth_across_frequency`) is smooth across
frequency, and these hold it.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

N_COEFFS = 48
MAX_EXEMPLARS = 3000
K = 4


@lru_cache(maxsize=4)
def dct_basis(n_features: int, n_coeffs: int = N_COEFFS) -> np.ndarray:
    """(n_features, n_coeffs) orthonormal DCT-II basis: coefficients = envelope @ basis, and
    coefficients @ basis.T is the envelope with its finer detail left out."""
    n = np.arange(n_features)[:, None] + 0.5
    k = np.arange(n_coeffs)[None, :]
    basis = np.cos(np.pi * n * k / n_features) * np.sqrt(2.0 / n_features)
    basis[:, 0] /= np.sqrt(2.0)
    return basis.astype(np.float32)


def envelope_coefficients(frames: np.ndarray) -> np.ndarray:
    """Raw log-magnitude frames (n, n_features) -> (n, N_COEFFS) coefficients of their envelopes."""
    from vc.pitch import smooth_across_frequency

    frames = np.asarray(frames, np.float32)
    return smooth_across_frequency(frames) @ dct_basis(frames.shape[-1])


def thin(coefficients: np.ndarray, max_count: int = MAX_EXEMPLARS) -> np.ndarray:
    """At most max_count rows, evenly spaced over all of them (so every enrolment file keeps its share)."""
    if coefficients.shape[0] <= max_count:
        return coefficients
    keep = np.linspace(0, coefficients.shape[0] - 1, max_count).round().astype(np.int64)
    return coefficients[keep]


def exemplar_set(coefficients: np.ndarray, max_count: int = MAX_EXEMPLARS) -> np.ndarray:
    """All envelope coefficients of an enrolment (n, N_COEFFS) -> what speaker.npy keeps: at most max_count
    of them (`thin`), in float16 and in a fixed shuffled order. Matching needs no order, and without it
    the file holds a set of spectral envelopes, not a time line from which the enrolment speech could be
    pieced together."""
    kept = thin(coefficients, max_count)
    return kept[np.random.default_rng(0).permutation(kept.shape[0])].astype(np.float16)


def draw_onto_exemplars(frames: np.ndarray, exemplars: np.ndarray, speech: np.ndarray, k: int = K,
                        amount: float = 1.0) -> np.ndarray:
    """Decoded raw frames (T, n_features) -> the same frames with the envelope of each speech frame moved
    `amount` of the way to the mean of its k nearest exemplar envelopes (Euclidean, in coefficients;
    non-speech frames unchanged). exemplars: (n, N_COEFFS) from `envelope_coefficients`."""
    from vc.pitch import smooth_across_frequency

    if amount == 0.0 or not np.any(speech):
        return frames
    basis = dct_basis(frames.shape[-1], exemplars.shape[1])
    pool = np.asarray(exemplars, np.float32)
    envelope = smooth_across_frequency(frames[speech])
    query = envelope @ basis
    distance = (np.square(pool).sum(axis=1)[None, :] - 2.0 * query @ pool.T)  # + |query|^2, same per row
    k = min(k, pool.shape[0])
    nearest = np.argpartition(distance, k - 1, axis=1)[:, :k]
    drawn = pool[nearest].mean(axis=1) @ basis.T
    out = np.array(frames, np.float32, copy=True)
    out[speech] += amount * (drawn - envelope)
    return out
