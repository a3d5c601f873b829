"""The baselines scored beside f and z on the same frames: MFCC means and i-vectors.

* ``mfcc``: mean MFCC vector over the voiced frames (c0 left out: it measures loudness, not voice);
* ``ivector``: a GMM-UBM / total-variability i-vector system (:mod:`training.ivector`) on MFCCs with
  deltas, trained on the training split only (``IVectorOptions.lda_dim > 0`` adds LDA + WCCN).
"""
from __future__ import annotations

import functools
import time
from dataclasses import dataclass

import numpy as np

from training.eval.metrics import EvaluationError

# Frames more than this far below the loudest frame of the utterance count as silence for the MFCC
# baselines (synthetic speech in particular has long stretches of digital silence).
VAD_RANGE_DB = 40.0
N_MELS = 40


def feature_setting(feature_config, name: str):
    return feature_config[name] if isinstance(feature_config, dict) else getattr(feature_config, name)


def mfcc_from_log_magnitude(frames: np.ndarray, feature_config, n_mfcc: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """librosa MFCCs (n_frames, n_mfcc) and frame energies in dB (n_frames,) from log-magnitude frames.

    The MFCCs come from the same STFT the model sees (power spectrum, 40 mel bands over 20 Hz - 7.6 kHz,
    librosa's filters, dB scale and DCT), so all embeddings share one feature pass. A dropped DC bin
    counts at the floor; with fmin > 0 no mel band looks at it anyway.
    """
    import librosa

    sr = int(feature_setting(feature_config, "sr"))
    n_fft = int(feature_setting(feature_config, "n_fft"))
    frames = np.asarray(frames, dtype=np.float64)
    filters = _mel_filters(sr, n_fft)
    if frames.shape[1] == n_fft // 2:
        floor = float(feature_setting(feature_config, "log_floor"))
        dc_power = floor**2 * filters[:, :1]
        filters = filters[:, 1:]
    elif frames.shape[1] == n_fft // 2 + 1:
        dc_power = 0.0
    else:
        raise EvaluationError(f"frames have {frames.shape[1]} bins, n_fft={n_fft} gives {n_fft // 2 + 1}")
    # One matrix product: librosa.feature.melspectrogram's einsum path took 20 ms per utterance,
    # most of an evaluation's feature time.
    mel = filters @ np.exp(2.0 * frames).T + dc_power
    log_mel = librosa.power_to_db(mel, top_db=None)
    mfcc = librosa.feature.mfcc(S=log_mel, n_mfcc=n_mfcc)
    energy_db = 10.0 * np.log10(np.maximum(mel.sum(axis=0), 1e-20))
    return mfcc.T.astype(np.float32), energy_db


@functools.lru_cache(maxsize=4)
def _mel_filters(sr: int, n_fft: int) -> np.ndarray:
    import librosa

    return librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=N_MELS, fmin=20.0, fmax=min(7600.0, sr / 2), dtype=np.float64)


def voiced_frames(energy_db: np.ndarray, range_db: float = VAD_RANGE_DB) -> np.ndarray:
    """Boolean mask of frames within ``range_db`` of the utterance's loudest frame."""
    return energy_db >= energy_db.max() - range_db


def mfcc_mean_embedding(mfcc: np.ndarray, energy_db: np.ndarray) -> np.ndarray:
    """Mean over voiced frames of c1..c(n-1)."""
    return mfcc[voiced_frames(energy_db), 1:].mean(axis=0)


def ivector_features(mfcc: np.ndarray, energy_db: np.ndarray, cmn: bool = False) -> np.ndarray:
    """MFCCs with deltas over the voiced frames: (n_voiced, 2 n_mfcc).

    ``cmn`` removes each utterance's cepstral mean, the usual cure for channel differences; it also
    removes the long-term spectral envelope, which on single-channel (e.g. synthesised) corpora is much
    of what tells voices apart, so it is off by default.
    """
    import librosa

    width = min(9, len(mfcc) if len(mfcc) % 2 else len(mfcc) - 1)
    if width < 3:
        raise EvaluationError(f"{len(mfcc)} frames are too few for delta features")
    deltas = librosa.feature.delta(mfcc.T, width=width, axis=-1).T
    stacked = np.hstack([mfcc, deltas])[voiced_frames(energy_db)]
    if cmn:
        stacked = stacked - stacked.mean(axis=0)
    return stacked.astype(np.float32)


@dataclass
class IVectorOptions:
    """Sizes of the i-vector baseline (kept modest: the UBM and T train in about a minute on 2 cores)."""

    n_components: int = 64
    rank: int = 100
    iterations: int = 5
    n_mfcc: int = 20
    cmn: bool = False
    # LDA + WCCN on the training speakers (capped at n_speakers - 1 dimensions); 0 scores the plain
    # length-normalised i-vectors, which on corpora where every speaker reads the same sentences
    # mostly match the text (measured: 37.5 % EER against 12.5 % with LDA + WCCN on espeak-ng voices).
    lda_dim: int = 0
    ubm_max_frames: int = 200_000
    # A random subset beyond this: enough for a 64 x 100 system, and it keeps VCTK-sized training sets
    # (tens of thousands of utterances) within memory and minutes.
    max_train_utterances: int | None = 5000


def train_and_embed_ivectors(open_split, train_split: str, segment_length: int, feature_config,
                             options: IVectorOptions, test_inputs, seed: int, log) -> np.ndarray:
    """Train the i-vector system on the training split's usable utterances; i-vectors of test_inputs."""
    from training.ivector import IVectorExtractor

    train_started = time.time()
    source = open_split(train_split)
    if len(source.items) < 2:
        raise EvaluationError(f"the i-vector baseline needs a {train_split!r} split with utterances")
    order = np.arange(len(source.items))
    if options.max_train_utterances is not None and len(order) > options.max_train_utterances:
        order = np.sort(np.random.default_rng(seed).choice(len(order), options.max_train_utterances, replace=False))
    train_inputs, train_speakers = [], []
    for index in order:
        frames = source.frames(int(index))
        if len(frames) < segment_length:
            continue
        mfcc, energy = mfcc_from_log_magnitude(frames, feature_config, n_mfcc=options.n_mfcc)
        train_inputs.append(ivector_features(mfcc, energy, cmn=options.cmn))
        train_speakers.append(source.items[int(index)].speaker)
    if options.lda_dim > 0 and len(set(train_speakers)) < 2:
        raise EvaluationError(f"split {train_split!r} needs at least two speakers for LDA (or use --ivector-lda 0)")
    if len(train_inputs) < 2:
        raise EvaluationError(f"split {train_split!r} has too few usable utterances for the i-vector baseline")
    log(f"i-vector: features of {len(train_inputs)} {train_split} utterances in {time.time() - train_started:.1f} s")
    try:
        extractor = IVectorExtractor.train(
            train_inputs, n_components=options.n_components, rank=options.rank,
            iterations=options.iterations, ubm_max_frames=options.ubm_max_frames, seed=seed,
            speakers=train_speakers, lda_dim=options.lda_dim,
        )
    except ValueError as exc:
        raise EvaluationError(f"i-vector training failed: {exc}") from None
    lda = f", LDA + WCCN to {extractor.dim}" if extractor.projection is not None else ""
    log(f"i-vector: UBM {options.n_components} x {train_inputs[0].shape[1]}, rank {extractor.tv.rank}{lda}, "
        f"trained in {time.time() - train_started:.1f} s")
    return extractor.embed(test_inputs)
