"""The target's own spectral envelopes and voiced frames (exemplars), and drawing converted frames onto them.

The decoder predicts the mean log spectrum given (f, z): smoother than any real frame, and a speaker
verifier hears that smoothing as another voice. So after decoding, each speech frame's envelope is moved
onto the mean of its nearest envelopes among those the target's enrolment kept (the matching step of
kNN-VC, Baas, van Niekerk & Kamper 2023, applied to the DSAE's output). Envelopes are compared and stored
as their first N_COEFFS orthonormal DCT-II coefficients, which hold a curve this smooth.

The same goes for what lies on the envelope: a pulse train's harmonics are perfectly periodic and equally
deep everywhere, a real voice's are not (breath fills the upper bands, the glottis shapes the lower ones).
So the target's voiced frames are kept too (`VoicedExemplars`), and a converted voiced frame takes the
mean fine structure of the few nearest in F0 among those nearest in envelope, each stretched along frequency
to its F0 exactly (`voiced_fine_structure`). The measurements behind this are in docs/experiments.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

N_COEFFS = 48
MAX_EXEMPLARS = 3000
MAX_VOICED = 1500
# Ridge of `fit_envelope_map` on unit-spread inputs: the fit has 49 inputs and up to 3000 frames, so
# it matters little (dev margins 0.1427-0.1441 from 0.1 to 100).
ENVELOPE_MAP_RIDGE = 1.0
QUERY_BLOCK = 4096   # frames matched at a time: an hour-long file must not need a (frames x exemplars) matrix


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


def evenly_spaced(coefficients: np.ndarray, max_count: int = MAX_EXEMPLARS) -> np.ndarray:
    """At most max_count rows, evenly spaced over all of them (so every enrolment file keeps its share)."""
    if coefficients.shape[0] <= max_count:
        return coefficients
    keep = np.linspace(0, coefficients.shape[0] - 1, max_count).round().astype(np.int64)
    return coefficients[keep]


def exemplar_set(coefficients: np.ndarray, max_count: int = MAX_EXEMPLARS) -> np.ndarray:
    """All envelope coefficients of an enrolment (n, N_COEFFS) -> what speaker.npy keeps: at most max_count
    of them (`evenly_spaced`), in float16 and in a fixed shuffled order. Matching needs no order, and without it
    the file holds a set of spectral envelopes, not a time line from which the enrolment speech could be
    pieced together."""
    return _unordered(evenly_spaced(coefficients, max_count)).astype(np.float16)


def _unordered(rows: np.ndarray) -> np.ndarray:
    """The rows in a fixed shuffled order (the same for the same count)."""
    return rows[np.random.default_rng(0).permutation(rows.shape[0])]


def nearest_exemplars(query: np.ndarray, pool: np.ndarray, k: int) -> np.ndarray:
    """(n, d) queries and (m, d) exemplars -> (n, min(k, m)) indices of each query's nearest exemplars
    (Euclidean, in no particular order)."""
    k = min(k, pool.shape[0])
    pool_sq = np.square(pool).sum(axis=1)[None, :]
    out = np.empty((query.shape[0], k), np.int64)
    for start in range(0, query.shape[0], QUERY_BLOCK):
        block = query[start:start + QUERY_BLOCK]
        distance = pool_sq - 2.0 * block @ pool.T           # + |query|^2, the same along each row
        out[start:start + QUERY_BLOCK] = np.argpartition(distance, k - 1, axis=1)[:, :k]
    return out


def fit_envelope_map(decoded: np.ndarray, real: np.ndarray, *, ridge: float = ENVELOPE_MAP_RIDGE) -> np.ndarray:
    """A speaker's decoded envelopes (n, c) and their own real ones (n, c), in coefficients -> the ridge
    regression map (c + 1, c) from the first to the second (`predict_envelopes`): what the decoder smooths
    away of this speaker, as one linear function of the decoded envelope. Inputs are scaled to unit spread
    first, so `ridge` weighs every coefficient alike."""
    decoded = np.asarray(decoded, np.float64)
    real = np.asarray(real, np.float64)
    if decoded.ndim != 2 or real.shape != decoded.shape or decoded.shape[0] == 0:
        raise ValueError(f"fit_envelope_map needs two (n, c) arrays of one shape, not {decoded.shape} and {real.shape}")
    inputs = np.concatenate([decoded, np.ones((decoded.shape[0], 1))], axis=1)
    scale = inputs.std(axis=0)
    scale[-1] = 1.0
    scale[scale < 1e-6] = 1.0
    scaled = inputs / scale
    gram = scaled.T @ scaled + ridge * np.eye(scaled.shape[1])
    return (np.linalg.solve(gram, scaled.T @ real) / scale[:, None]).astype(np.float32)


def predict_envelopes(coefficients: np.ndarray, envelope_map: np.ndarray) -> np.ndarray:
    """(n, c) decoded envelope coefficients -> (n, c) the speaker's envelopes as `fit_envelope_map` predicts them."""
    return coefficients @ envelope_map[:-1] + envelope_map[-1]


def draw_onto_exemplars(frames: np.ndarray, exemplars: np.ndarray, speech: np.ndarray, *, k: int,
                        amount: float = 1.0, codes: np.ndarray | None = None,
                        exemplar_codes: np.ndarray | None = None, candidates: int | None = None,
                        envelope_map: np.ndarray | None = None, prediction: float = 0.0) -> np.ndarray:
    """Decoded raw frames (T, n_features) -> the same frames with the envelope of each speech frame moved
    `amount` of the way (beyond 1: past it) to the mean of its k nearest exemplar envelopes (non-speech
    frames unchanged). exemplars: (n, N_COEFFS) from `envelope_coefficients`.

    With `envelope_map` (`fit_envelope_map` on the target's own frames), `prediction` of what the frame is
    moved to is the target's envelope predicted from the decoded one instead: a smooth function of the frame,
    where the nearest exemplars are sometimes frames of another sound.

    Nearest by what is said when `codes` (T, z_dim), the frames' z, and `exemplar_codes` (n, z_dim), the z
    of each exemplar's frame, are given: the target's envelopes of the same sound. Else nearest by envelope
    (Euclidean, in coefficients), which finds the target's frames that look most alike, often of another
    phone, and costs words. With `candidates` as well, the codes only rank the `candidates` nearest by
    envelope: the same sound among the frames that look alike."""
    from vc.pitch import smooth_across_frequency

    if amount == 0.0 or not np.any(speech):
        return frames
    basis = dct_basis(frames.shape[-1], exemplars.shape[1])
    pool = np.asarray(exemplars, np.float32)
    envelope = smooth_across_frequency(frames[speech])
    coefficients = envelope @ basis
    if codes is not None and exemplar_codes is not None and candidates:
        near = nearest_exemplars(coefficients, pool, candidates)                      # (n, candidates)
        query = np.asarray(codes[speech], np.float32)
        keys = np.asarray(exemplar_codes, np.float32)[near]                          # (n, candidates, d)
        distance = np.square(keys - query[:, None, :]).sum(axis=2)
        take = min(k, near.shape[1])
        nearest = np.take_along_axis(near, np.argpartition(distance, take - 1, axis=1)[:, :take], axis=1)
    elif codes is not None and exemplar_codes is not None:
        nearest = nearest_exemplars(np.asarray(codes[speech], np.float32),
                                    np.asarray(exemplar_codes, np.float32), k)
    else:
        nearest = nearest_exemplars(coefficients, pool, k)
    drawn = pool[nearest].mean(axis=1)
    if envelope_map is not None and prediction:
        drawn = (1.0 - prediction) * drawn + prediction * predict_envelopes(coefficients, envelope_map)
    drawn = drawn @ basis.T
    out = np.array(frames, np.float32, copy=True)
    out[speech] += amount * (drawn - envelope)
    return out


@dataclass(frozen=True)
class VoicedExemplars:
    """A speaker's own voiced frames, in the same fixed shuffled order in all three arrays."""

    envelopes: np.ndarray   # float16 (m, N_COEFFS): each frame's envelope coefficients
    f0: np.ndarray          # float16 (m,): the F0 it was spoken at, Hz
    fine: np.ndarray        # float16 (m, n_features): its log spectrum less its envelope


def voiced_exemplar_set(frames: np.ndarray, f0: np.ndarray, max_count: int = MAX_VOICED) -> VoicedExemplars | None:
    """An enrolment's voiced speech frames (n, n_features, raw log magnitude) and their F0 (n,) -> what
    speaker.npy keeps of them: at most max_count, evenly spaced, shuffled as in `exemplar_set`; None when
    there are none."""
    from vc.pitch import smooth_across_frequency

    if frames.shape[0] == 0:
        return None
    rows = _unordered(evenly_spaced(np.arange(frames.shape[0]), max_count))
    frames = np.asarray(frames[rows], np.float32)
    envelope = smooth_across_frequency(frames)
    return VoicedExemplars((envelope @ dct_basis(frames.shape[1])).astype(np.float16),
                           np.asarray(f0[rows], np.float16), (frames - envelope).astype(np.float16))


def voiced_fine_structure(envelope: np.ndarray, f0: np.ndarray, voiced: np.ndarray, exemplars: VoicedExemplars,
                          cfg, *, near: int, per_frame: int = 1) -> np.ndarray:
    """Envelopes of converted frames (T, n_features; `vc.pitch.smooth_across_frequency` of them) and the F0
    each should have -> (T, n_features) fine structure to add to them: for each voiced frame, the mean fine
    structure of the `per_frame` exemplars with the F0 nearest to its own among the `near` with the nearest
    envelopes, each stretched along frequency by the ratio of the two F0s (harmonic k stays harmonic k);
    zero in unvoiced frames. One exemplar per frame changes its breath and jitter from frame to frame;
    several aligned on the same harmonics keep what they share."""
    out = np.zeros(envelope.shape, np.float32)
    rows = np.flatnonzero(voiced)
    for start in range(0, rows.size, QUERY_BLOCK):
        block = rows[start:start + QUERY_BLOCK]
        out[block] = _stretched_fine_structure(envelope[block], np.asarray(f0[block], np.float64), exemplars,
                                               cfg, near, per_frame)
    return out


def _stretched_fine_structure(envelope: np.ndarray, wanted: np.ndarray, exemplars: VoicedExemplars, cfg,
                              near: int, per_frame: int) -> np.ndarray:
    n, n_features = envelope.shape
    pool = np.asarray(exemplars.envelopes, np.float32)
    nearest = nearest_exemplars(envelope @ dct_basis(n_features, pool.shape[1]), pool, near)
    pool_f0 = np.asarray(exemplars.f0, np.float64)
    distance = np.abs(np.log(pool_f0[nearest] / wanted[:, None]))
    order = np.argsort(distance, axis=1, kind="stable")[:, :per_frame]
    picks = np.take_along_axis(nearest, order, axis=1).reshape(-1)
    # only the rows taken are converted: a stream calls this every hop
    fine = stretch_along_frequency(exemplars.fine[picks].astype(np.float32),
                                   np.repeat(wanted, order.shape[1]) / pool_f0[picks], cfg)
    return fine.reshape(n, order.shape[1], n_features).mean(axis=1)


def stretch_along_frequency(fine: np.ndarray, ratio: np.ndarray, cfg) -> np.ndarray:
    """Fine structure rows (n, n_features) -> the same stretched along frequency by `ratio` (n,), so that
    harmonic k of a frame at F0 lands on harmonic k at ratio x F0; zero where the stretch reads past the
    last bin."""
    n_features = fine.shape[1]
    # Feature k is FFT bin k + drop_dc; a frequency f of the output comes from f / ratio of the input.
    first_bin = int(cfg.drop_dc)
    bins = np.arange(n_features) + first_bin
    source_bin = bins[None, :] / np.asarray(ratio, np.float64)[:, None] - first_bin
    low = np.floor(source_bin).astype(np.int64)
    frac = (source_bin - low).astype(np.float32)
    inside = (low >= 0) & (low + 1 < n_features)
    low = np.clip(low, 0, n_features - 2)
    taken = np.take_along_axis(fine, low, axis=1) * (1.0 - frac) + np.take_along_axis(fine, low + 1, axis=1) * frac
    return np.where(inside, taken, 0.0).astype(np.float32)
