"""Speaker verification as a test of disentanglement: EER, minDCF, DET curves, and the evaluation driver.

The static code ``f`` of a good DSAE identifies the speaker (low equal error rate); the dynamic codes
``z`` should not (EER near 50 %). :func:`evaluate` scores every pair of test utterances (or a trial
list) by cosine similarity with up to four embeddings on the same trials:

* ``f``: mean over the utterance's 200 ms segments of the posterior mean of f (or, with ``mc=N``, of the
  mean of N posterior samples: the paper's Monte-Carlo estimate);
* ``z``: mean over segments and frames of the posterior mean of z;
* ``mfcc``: mean MFCC vector over the voiced frames (c0 left out: it measures loudness, not voice),
  scored after removing the mean over the evaluated utterances (no labels used);
* ``ivector``: a GMM-UBM / total-variability i-vector system (:mod:`training.ivector`) on MFCCs with
  deltas, trained on the training split only, centred and length-normalised, scored by cosine (the
  protocol of the DSAE papers); ``IVectorOptions.lda_dim > 0`` adds LDA + WCCN fitted on the training
  speakers, a stronger back-end reported beside it in the README.

Too-short utterances (less than one model segment) are left out of every embedding alike, so all
embeddings are scored on the same trials.

The metrics are exact on the empirical ROC: the EER is where the miss and false-alarm rates cross,
interpolated linearly between the two adjacent operating points, not read off a threshold grid.
"""

from __future__ import annotations

import functools
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from vc.files import save_figure

__all__ = [
    "EMBEDDINGS",
    "EvaluationError",
    "IVectorOptions",
    "operating_points",
    "equal_error_rate",
    "min_dcf",
    "cosine_scores",
    "all_pairs_trials",
    "read_trial_list",
    "segment_starts",
    "model_embeddings",
    "mfcc_from_log_magnitude",
    "voiced_frames",
    "mfcc_mean_embedding",
    "ivector_features",
    "plot_det",
    "plot_pca",
    "evaluate",
    "format_table",
]

EMBEDDINGS = ("f", "z", "mfcc", "ivector")
DEFAULT_SEGMENT_LENGTH = 20
# Frames more than this far below the loudest frame of the utterance count as silence for the MFCC
# baselines (synthetic speech in particular has long stretches of digital silence).
VAD_RANGE_DB = 40.0
N_MELS = 40
# Utterances whose segments go through the encoder together (bounds the memory of large test sets).
_ENCODE_CHUNK = 64


class EvaluationError(ValueError):
    """Input that cannot be evaluated; ``str()`` is one line naming the file or option at fault."""


# ------------------------------------------------------------------------------------------ metrics


def _check_scores(target: np.ndarray, nontarget: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    target = np.asarray(target, dtype=np.float64).ravel()
    nontarget = np.asarray(nontarget, dtype=np.float64).ravel()
    if target.size == 0 or nontarget.size == 0:
        raise EvaluationError(
            f"need both target and non-target trials (got {target.size} target, {nontarget.size} non-target)"
        )
    if not (np.all(np.isfinite(target)) and np.all(np.isfinite(nontarget))):
        raise EvaluationError("scores contain NaN or infinite values")
    return target, nontarget


def operating_points(target: np.ndarray, nontarget: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every distinct operating point of the rule "accept when score >= threshold".

    Returns ``(p_fa, p_miss, thresholds)`` with one entry per distinct score plus a final
    reject-everything point (threshold +inf). ``p_fa`` falls from 1 to 0 and ``p_miss`` rises from 0 to 1;
    tied target and non-target scores move both at once, which is what interpolation then follows.
    """
    target, nontarget = _check_scores(target, nontarget)
    scores = np.concatenate([target, nontarget])
    is_target = np.concatenate([np.ones(target.size), np.zeros(nontarget.size)])
    order = np.argsort(scores, kind="mergesort")
    scores, is_target = scores[order], is_target[order]
    thresholds, first = np.unique(scores, return_index=True)
    targets_below = np.concatenate([[0.0], np.cumsum(is_target)])[first]
    nontargets_below = first - targets_below
    p_miss = np.append(targets_below / target.size, 1.0)
    p_fa = np.append(1.0 - nontargets_below / nontarget.size, 0.0)
    return p_fa, p_miss, np.append(thresholds, np.inf)


def equal_error_rate(target: np.ndarray, nontarget: np.ndarray) -> tuple[float, float]:
    """``(eer, threshold)``: where p_miss = p_fa on the ROC, linearly interpolated between the two
    adjacent operating points (the threshold is interpolated the same way)."""
    p_fa, p_miss, thresholds = operating_points(target, nontarget)
    difference = p_miss - p_fa  # rises from -1 to +1
    k = int(np.argmax(difference >= 0.0))
    if k == 0:
        return float(p_fa[0]), float(thresholds[0])
    d0, d1 = difference[k - 1], difference[k]
    weight = d0 / (d0 - d1) if d1 != d0 else 0.0
    eer = p_fa[k - 1] + weight * (p_fa[k] - p_fa[k - 1])
    low, high = thresholds[k - 1], thresholds[k]
    threshold = low + weight * (high - low) if np.isfinite(high) else low
    return float(eer), float(threshold)


def min_dcf(
    target: np.ndarray, nontarget: np.ndarray, p_target: float = 0.01, c_miss: float = 1.0, c_fa: float = 1.0
) -> tuple[float, float]:
    """``(min_dcf, threshold)``: the detection cost ``c_miss p_target P_miss + c_fa (1 - p_target) P_fa``
    minimised over thresholds and normalised by the cost of the better trivial system, so 1.0 means
    "no better than always accepting or always rejecting"."""
    if not 0.0 < p_target < 1.0:
        raise EvaluationError(f"p_target must be in (0, 1), got {p_target}")
    p_fa, p_miss, thresholds = operating_points(target, nontarget)
    cost = c_miss * p_target * p_miss + c_fa * (1.0 - p_target) * p_fa
    best = int(np.argmin(cost))
    return float(cost[best] / min(c_miss * p_target, c_fa * (1.0 - p_target))), float(thresholds[best])


# ------------------------------------------------------------------------------------------- trials


def cosine_scores(embeddings: np.ndarray, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Cosine similarity of ``embeddings[first[k]]`` and ``embeddings[second[k]]`` for every trial k."""
    vectors = np.asarray(embeddings, dtype=np.float64)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit = vectors / np.maximum(norms, 1e-12)
    return np.einsum("ij,ij->i", unit[first], unit[second])


def all_pairs_trials(speakers: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every unordered pair of distinct utterances: ``(first, second, is_target)``."""
    first, second = np.triu_indices(len(speakers), k=1)
    labels = np.asarray(speakers)
    return first, second, labels[first] == labels[second]


_TARGET_WORDS = {"target": True, "tgt": True, "1": True, "true": True, "nontarget": False, "non-target": False,
                 "imposter": False, "impostor": False, "0": False, "false": False}


def read_trial_list(
    path: os.PathLike | str, keys: dict[str, int], speakers: Sequence[str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Read a trial list: one trial per line, two utterance keys and an optional label, either first
    (``1 a b``, VoxCeleb style) or last (``a b target``, NIST style); ``#`` starts a comment.

    ``keys`` maps every accepted utterance key to an index. Without a label the trial is labelled by
    the speakers' identity. Returns ``(first, second, is_target, n_dropped)``; a trial naming an
    utterance that is not available (e.g. skipped as too short) is dropped and counted, but a key that
    names nothing in the data set at all is an error, since that is a wrong trial list.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise EvaluationError(f"{path}: cannot read trial list ({exc})") from None
    first, second, labels = [], [], []
    dropped = 0
    for line_number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        fields = line.split()
        label = None
        if len(fields) == 3:
            words = [field.lower() in _TARGET_WORDS for field in fields]
            if words[0] and fields[1] in keys and fields[2] in keys:
                label, fields = _TARGET_WORDS[fields[0].lower()], fields[1:]
            elif words[2] and fields[0] in keys and fields[1] in keys:
                label, fields = _TARGET_WORDS[fields[2].lower()], fields[:2]
            elif words[0] or words[2]:  # a label is there, so a key is wrong: say which one below
                label, fields = None, (fields[1:] if words[0] else fields[:2])
        if len(fields) != 2:
            raise EvaluationError(f"{path}:{line_number}: expected 'KEY KEY [LABEL]' or 'LABEL KEY KEY', got {line!r}")
        indices = []
        for key in fields:
            index = keys.get(key)
            if index is None:
                raise EvaluationError(f"{path}:{line_number}: unknown utterance {key!r}")
            indices.append(index)
        if indices[0] < 0 or indices[1] < 0:
            dropped += 1
            continue
        if label is None:
            label = speakers[indices[0]] == speakers[indices[1]]
        first.append(indices[0])
        second.append(indices[1])
        labels.append(label)
    if not first:
        raise EvaluationError(f"{path}: no usable trials")
    return np.array(first), np.array(second), np.array(labels, dtype=bool), dropped


# ------------------------------------------------------------------------------------- embeddings


def segment_starts(n_frames: int, segment_length: int, hop: int | None = None) -> np.ndarray:
    """First frames of the segments that tile an utterance: every ``hop`` frames (default: back to
    back), plus one flush with the end so the last frames are not lost. Empty when too short."""
    hop = segment_length if hop is None else hop
    if n_frames < segment_length:
        return np.zeros(0, dtype=np.int64)
    starts = np.arange(0, n_frames - segment_length + 1, hop, dtype=np.int64)
    if starts[-1] != n_frames - segment_length:
        starts = np.append(starts, n_frames - segment_length)
    return starts


def model_embeddings(
    model,
    utterance_frames: Sequence[np.ndarray],
    mc: int = 0,
    segment_hop: int | None = None,
    seed: int | np.random.Generator = 0,
    batch_segments: int = 512,
) -> tuple[np.ndarray, np.ndarray]:
    """Utterance-level ``f`` (U, f_dim) and ``z`` (U, z_dim) from raw log-magnitude frames.

    ``model`` follows :class:`vc.model.Model` (``normalise``, ``encode``, ``segment_length``). Every
    utterance needs at least one segment. With ``mc > 0`` the f of each segment is the mean of ``mc``
    samples from its posterior instead of the posterior mean.
    """
    length = int(model.segment_length)
    rng = np.random.default_rng(seed)
    segments, owners = [], []
    for index, frames in enumerate(utterance_frames):
        starts = segment_starts(len(frames), length, segment_hop)
        if starts.size == 0:
            raise EvaluationError(f"utterance {index} has {len(frames)} frames, fewer than one segment ({length})")
        segments.extend((index, int(s)) for s in starts)
        owners.extend([index] * len(starts))
    owners = np.asarray(owners)
    f_sum = None
    z_sum = None
    for start in range(0, len(segments), batch_segments):
        batch = segments[start : start + batch_segments]
        x = np.stack([utterance_frames[i][s : s + length] for i, s in batch])
        f_mean, f_logvar, z_mean, _ = model.encode(model.normalise(x))
        f_mean = np.asarray(f_mean, dtype=np.float64)
        if mc > 0:
            noise = rng.standard_normal((mc,) + f_mean.shape).mean(axis=0)
            f_value = f_mean + np.exp(0.5 * np.asarray(f_logvar, dtype=np.float64)) * noise
        else:
            f_value = f_mean
        z_value = np.asarray(z_mean, dtype=np.float64).mean(axis=1)
        if f_sum is None:
            f_sum = np.zeros((len(utterance_frames), f_value.shape[1]))
            z_sum = np.zeros((len(utterance_frames), z_value.shape[1]))
        who = owners[start : start + len(batch)]
        np.add.at(f_sum, who, f_value)
        np.add.at(z_sum, who, z_value)
    counts = np.bincount(owners, minlength=len(utterance_frames))[:, None]
    # Every segment has the same number of frames, so the mean of segment means is the mean over time.
    return (f_sum / counts).astype(np.float32), (z_sum / counts).astype(np.float32)


def _config(feature_config, name: str):
    return feature_config[name] if isinstance(feature_config, dict) else getattr(feature_config, name)


def mfcc_from_log_magnitude(frames: np.ndarray, feature_config, n_mfcc: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """librosa MFCCs (n_frames, n_mfcc) and frame energies in dB (n_frames,) from log-magnitude frames.

    The MFCCs come from the same STFT the model sees (power spectrum, 40 mel bands over 20 Hz - 7.6 kHz,
    librosa's filters, dB scale and DCT), so all embeddings share one feature pass. A dropped DC bin
    counts at the floor; with fmin > 0 no mel band looks at it anyway.
    """
    import librosa

    sr = int(_config(feature_config, "sr"))
    n_fft = int(_config(feature_config, "n_fft"))
    frames = np.asarray(frames, dtype=np.float64)
    filters = _mel_filters(sr, n_fft)
    if frames.shape[1] == n_fft // 2:
        floor = float(_config(feature_config, "log_floor"))
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


# ------------------------------------------------------------------------------------------- plots


def plot_det(curves: dict[str, tuple[np.ndarray, np.ndarray, float]], path: os.PathLike | str, title: str = "") -> None:
    """DET plot on normal-deviate axes; ``curves`` maps a label to ``(p_fa, p_miss, eer)``."""
    from matplotlib.figure import Figure
    from scipy.stats import norm

    ticks = np.array([0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 0.95])
    low, high = 0.001, 0.95
    figure = Figure(figsize=(5.5, 5.5))
    axes = figure.add_subplot()
    for label, (p_fa, p_miss, eer) in curves.items():
        # Clipping to the axis limits draws a perfect system along the bottom and left edges.
        x = norm.ppf(np.clip(p_fa, low, high))
        y = norm.ppf(np.clip(p_miss, low, high))
        (line,) = axes.plot(x, y, label=f"{label} (EER {100 * eer:.2f} %)", clip_on=False)
        deviate = norm.ppf(np.clip(eer, low, high))
        axes.plot([deviate], [deviate], "o", color=line.get_color(), clip_on=False)
    span = norm.ppf([low, high])
    axes.plot(span, span, ":", color="grey", linewidth=0.8)
    axes.set_xticks(norm.ppf(ticks), [f"{100 * t:g}" for t in ticks])
    axes.set_yticks(norm.ppf(ticks), [f"{100 * t:g}" for t in ticks])
    axes.set_xlim(*span)
    axes.set_ylim(*span)
    axes.set_xlabel("false alarm rate (%)")
    axes.set_ylabel("miss rate (%)")
    axes.set_title(title or "DET")
    axes.grid(True, linewidth=0.4)
    axes.legend(loc="upper right", fontsize="small")
    save_figure(figure, path, dpi=120, bbox_inches="tight")


def plot_pca(embeddings: np.ndarray, speakers: Sequence[str], path: os.PathLike | str, title: str = "") -> None:
    """Scatter of the first two principal components of the embeddings, coloured by speaker."""
    from matplotlib.figure import Figure
    import matplotlib

    vectors = np.asarray(embeddings, dtype=np.float64)
    centred = vectors - vectors.mean(axis=0)
    _, singular, components = np.linalg.svd(centred, full_matrices=False)
    projected = centred @ components[:2].T
    if projected.shape[1] < 2:
        projected = np.hstack([projected, np.zeros((len(projected), 1))])
    explained = singular**2 / max(float(np.sum(singular**2)), 1e-30)
    names = sorted(set(speakers))
    colours = matplotlib.colormaps["tab20"].resampled(max(len(names), 1))
    figure = Figure(figsize=(6.5, 5.5))
    axes = figure.add_subplot()
    labels = np.asarray(speakers)
    for index, name in enumerate(names):
        chosen = labels == name
        axes.scatter(projected[chosen, 0], projected[chosen, 1], s=12, color=colours(index), label=name)
    axes.set_xlabel(f"PC 1 ({100 * explained[0]:.1f} % of variance)")
    axes.set_ylabel(f"PC 2 ({100 * (explained[1] if len(explained) > 1 else 0):.1f} % of variance)")
    axes.set_title(title or "PCA of utterance embeddings")
    if len(names) <= 24:
        axes.legend(fontsize="x-small", ncol=2, markerscale=1.5, loc="best")
    save_figure(figure, path, dpi=120, bbox_inches="tight")


# ------------------------------------------------------------------------------------ data access


@dataclass
class _Utterance:
    speaker: str
    utterance: str
    path: str


class _CorpusFrames:
    """Utterances of one split of a corpus, featurised on demand with the model's FeatureConfig."""

    def __init__(self, corpus, split: str, feature_config):
        from training.data.corpora import CorpusError

        try:
            records = corpus.utterances(split)
        except CorpusError as exc:
            raise EvaluationError(str(exc)) from None
        self.items = [_Utterance(r.speaker, r.utterance, str(r.path)) for r in records]
        self.feature_config = feature_config

    def frames(self, index: int) -> np.ndarray:
        from training.data.audio import AudioError, load_audio
        from vc.dsp import log_magnitude

        item = self.items[index]
        try:
            audio = load_audio(item.path, sr=int(_config(self.feature_config, "sr")))
        except AudioError as exc:
            raise EvaluationError(str(exc)) from None
        return np.asarray(log_magnitude(audio, cfg=self.feature_config), dtype=np.float32)


class _CacheFrames:
    """Utterances of one split of a feature cache written by ``vc-features`` (README contract)."""

    def __init__(self, cache, split: str):
        from training.data.features import FeatureCacheError

        try:
            self.split = cache.split(split)
        except FeatureCacheError as exc:
            raise EvaluationError(str(exc)) from None
        self.items = [_Utterance(u.speaker, u.utterance, u.path) for u in self.split.utterances]
        self.feature_config = cache.config
        self.skipped_by_cache = sum(1 for entry in cache.manifest.get("skipped", []) if entry.get("split") == split)

    def frames(self, index: int) -> np.ndarray:
        return np.asarray(self.split.utterance_frames(index), dtype=np.float32)


def _open_data(data: Path, split: str | None, feature_config):
    """(opener of a split's frames, description, split actually used) for a corpus or a feature cache."""
    if (data / "manifest.json").is_file():
        from training.data.features import FeatureCache, FeatureCacheError

        try:
            cache = FeatureCache(data)
        except FeatureCacheError as exc:
            raise EvaluationError(str(exc)) from None
        if feature_config is not None and cache.config.hash() != feature_config.hash():
            raise EvaluationError(
                f"{data}: the feature cache was made with feature config {cache.config.hash()}, the model "
                f"expects {feature_config.hash()}"
            )
        kind = cache.manifest.get("corpus_info", {}).get("kind") if isinstance(cache.manifest.get("corpus_info"), dict) else None
        used = split or ("core-test" if kind == "timit" and "core-test" in cache.splits else "test")
        return (lambda name: _CacheFrames(cache, name)), f"feature cache of {cache.corpus or data}", used
    from training.data.corpora import CorpusError, open_corpus

    if feature_config is None:
        from vc.dsp import FeatureConfig

        feature_config = FeatureConfig()
    try:
        corpus = open_corpus(data)
    except CorpusError as exc:
        raise EvaluationError(str(exc)) from None
    # TIMIT results in the literature use the 24-speaker core test set.
    used = split or ("core-test" if corpus.kind == "timit" else "test")
    return (lambda name: _CorpusFrames(corpus, name, feature_config)), f"corpus {corpus.name} ({corpus.kind})", used


# --------------------------------------------------------------------------------------- driver


def _keys_for(items: Sequence[_Utterance], kept: np.ndarray) -> dict[str, int]:
    """Every name a trial list may use for an utterance -> its index among the kept ones (-1: skipped)."""
    index_of = np.full(len(items), -1)
    index_of[kept] = np.arange(len(kept))
    keys: dict[str, int] = {}
    ambiguous = set()
    for position, item in enumerate(items):
        target = int(index_of[position])
        keys[f"{item.speaker}/{item.utterance}"] = target
        keys[item.path] = target
        if item.utterance in keys and keys[item.utterance] != target:
            ambiguous.add(item.utterance)
        keys[item.utterance] = target
    for name in ambiguous:
        del keys[name]
    return keys


def evaluate(
    data: os.PathLike | str,
    model_dir: os.PathLike | str | None = None,
    split: str | None = None,
    embeddings: Sequence[str] = EMBEDDINGS,
    trials: str = "all-pairs",
    mc: int = 0,
    plot: os.PathLike | str | None = None,
    scatter: os.PathLike | str | None = None,
    train_split: str = "train",
    ivector: IVectorOptions | None = None,
    p_target: float = 0.01,
    device: str = "auto",
    segment_hop: int | None = None,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Run the speaker-verification evaluation and return a JSON-ready dict (see ``vc-eer --help``).

    ``model_dir`` None means the default model ($VC_MODEL, else models/default). ``data`` is a corpus
    directory (any layout :func:`training.data.corpora.open_corpus` reads) or a
    feature cache. Utterances too short for one model segment are skipped for every embedding (so all
    embeddings are scored on the same trials) and counted under ``skipped``.
    """
    from training.ivector import single_threaded_blas

    # The numpy work is per utterance, on small matrices: one BLAS thread is fastest (see
    # training.ivector.single_threaded_blas). ONNX Runtime keeps its own threads.
    with single_threaded_blas():
        return _evaluate(data, model_dir, split, embeddings, trials, mc, plot, scatter, train_split, ivector,
                         p_target, device, segment_hop, seed, log)


def _evaluate(data, model_dir, split, embeddings, trials, mc, plot, scatter, train_split, ivector, p_target, device,
              segment_hop, seed, log) -> dict:
    started = time.time()
    log = log or (lambda message: None)
    embeddings = list(dict.fromkeys(embeddings))
    unknown = [e for e in embeddings if e not in EMBEDDINGS]
    if unknown or not embeddings:
        raise EvaluationError(f"embeddings must be among {', '.join(EMBEDDINGS)}, got {embeddings}")
    if mc < 0:
        raise EvaluationError(f"--mc must be >= 0, got {mc}")
    if not 0.0 < p_target < 1.0:
        raise EvaluationError(f"p_target must be in (0, 1), got {p_target}")
    if trials != "all-pairs" and not Path(trials).is_file():
        raise EvaluationError(f"{trials}: trial list not found (or use 'all-pairs')")
    ivector = ivector or IVectorOptions()
    data = Path(data)
    if not data.is_dir():
        raise EvaluationError(f"{data}: no such directory")

    model = None
    if "f" in embeddings or "z" in embeddings:
        from vc.model import ModelError, load_model

        try:
            model = load_model(model_dir, device=device)
        except ModelError as exc:
            raise EvaluationError(str(exc)) from None
        log(model.describe())
    feature_config = model.feature_config if model is not None else None
    open_split, description, split = _open_data(data, split, feature_config)
    source = open_split(split)
    if feature_config is None:
        feature_config = source.feature_config
    segment_length = int(model.segment_length) if model is not None else DEFAULT_SEGMENT_LENGTH
    if not source.items:
        raise EvaluationError(f"{data}: split {split!r} has no utterances")

    # One feature pass over the evaluation split feeds every embedding; the model sees the utterances in
    # chunks, so memory stays bounded on large test sets.
    kept, pending_frames, too_short = [], [], []
    mfcc_means, ivector_inputs, f_parts, z_parts = [], [], [], []
    rng = np.random.default_rng(seed)

    def encode_pending():
        if pending_frames:
            f_part, z_part = model_embeddings(model, pending_frames, mc=mc, segment_hop=segment_hop, seed=rng)
            f_parts.append(f_part)
            z_parts.append(z_part)
            pending_frames.clear()

    for index, item in enumerate(source.items):
        frames = source.frames(index)
        if len(frames) < segment_length:
            too_short.append(f"{item.speaker}/{item.utterance}")
            continue
        kept.append(index)
        if model is not None:
            pending_frames.append(frames)
            if len(pending_frames) >= _ENCODE_CHUNK:
                encode_pending()
        if "mfcc" in embeddings or "ivector" in embeddings:
            mfcc, energy = mfcc_from_log_magnitude(frames, feature_config, n_mfcc=ivector.n_mfcc)
            if "mfcc" in embeddings:
                mfcc_means.append(mfcc_mean_embedding(mfcc, energy))
            if "ivector" in embeddings:
                ivector_inputs.append(ivector_features(mfcc, energy, cmn=ivector.cmn))
    if model is not None:
        encode_pending()
    log(f"{description}, split {split}: {len(kept)} utterances, {len(too_short)} skipped as shorter than "
        f"one segment ({segment_length} frames)")
    kept = np.asarray(kept, dtype=np.int64)
    speakers = [source.items[i].speaker for i in kept]
    if len(set(speakers)) < 2:
        raise EvaluationError(f"{data}: split {split!r} needs at least two speakers with usable utterances")

    if trials == "all-pairs":
        first, second, is_target = all_pairs_trials(speakers)
        dropped_trials = 0
        protocol = "all-pairs"
    else:
        first, second, is_target, dropped_trials = read_trial_list(trials, _keys_for(source.items, kept), speakers)
        protocol = str(trials)
    if is_target.all() or not is_target.any():
        raise EvaluationError("the trials need both target (same-speaker) and non-target pairs")

    vectors: dict[str, np.ndarray] = {}
    scoring: dict[str, str] = {}
    if model is not None:
        f_vectors, z_vectors = np.concatenate(f_parts), np.concatenate(z_parts)
        if "f" in embeddings:
            vectors["f"] = f_vectors
            scoring["f"] = "cosine" + (f", f = mean of {mc} posterior samples per segment" if mc else "")
        if "z" in embeddings:
            vectors["z"] = z_vectors
            scoring["z"] = "cosine"
    if "mfcc" in embeddings:
        means = np.asarray(mfcc_means)
        # Every MFCC mean shares a large common component (the average spectral tilt), which would
        # swamp cosine similarity; removing the evaluated set's mean uses no speaker labels.
        vectors["mfcc"] = (means - means.mean(axis=0)).astype(np.float32)
        scoring["mfcc"] = "cosine after removing the mean over evaluated utterances"
    if "ivector" in embeddings:
        if train_split == split:
            log(f"warning: the i-vector baseline is trained on the evaluated split {split!r} itself")
        vectors["ivector"] = _train_and_embed_ivectors(open_split, train_split, segment_length, feature_config,
                                                       ivector, ivector_inputs, seed, log)
        scoring["ivector"] = "cosine of length-normalised i-vectors centred on the training mean" + (
            ", LDA + WCCN trained on the training speakers" if ivector.lda_dim > 0 else "")

    results, curves = [], {}
    for name in embeddings:
        scores = cosine_scores(vectors[name], first, second)
        target_scores, nontarget_scores = scores[is_target], scores[~is_target]
        eer, eer_threshold = equal_error_rate(target_scores, nontarget_scores)
        dcf, _ = min_dcf(target_scores, nontarget_scores, p_target=p_target)
        results.append({"embedding": name, "dim": int(vectors[name].shape[1]), "eer": eer, "min_dcf": dcf,
                        "eer_threshold": eer_threshold, "trials": int(len(scores)), "scoring": scoring[name]})
        p_fa, p_miss, _ = operating_points(target_scores, nontarget_scores)
        curves[name] = (p_fa, p_miss, eer)

    report = {
        "data": str(data),
        "source": description,
        "split": split,
        "model": str(model.model_dir) if model is not None else None,
        "model_id": model.model_id if model is not None else None,
        "protocol": protocol,
        "utterances": int(len(kept)),
        "speakers": len(set(speakers)),
        "skipped": {"too_short": len(too_short), "too_short_utterances": too_short[:50],
                    "by_feature_cache": int(getattr(source, "skipped_by_cache", 0)),
                    "trials_with_skipped_utterances": int(dropped_trials)},
        "trials": int(len(first)),
        "target_trials": int(is_target.sum()),
        "nontarget_trials": int((~is_target).sum()),
        "p_target": p_target,
        "mc": mc,
        "results": results,
    }
    for row in results:
        report[f"eer_{row['embedding']}"] = row["eer"]
        report[f"min_dcf_{row['embedding']}"] = row["min_dcf"]
    if "ivector" in embeddings:
        report["ivector_options"] = asdict(ivector)
    if plot is not None:
        plot_det(curves, plot, title=f"DET: {description}, split {split}, {len(first)} trials")
        report["plot"] = str(plot)
        if scatter is None and "f" in vectors:
            plot_path = Path(plot)
            scatter = plot_path.with_name(f"{plot_path.stem}-f-pca{plot_path.suffix or '.png'}")
    if scatter is not None:
        name = "f" if "f" in vectors else next(iter(vectors))
        plot_pca(vectors[name], speakers, scatter, title=f"PCA of {name} embeddings by speaker ({split})")
        report["scatter"] = str(scatter)
    report["seconds"] = round(time.time() - started, 2)
    return report


def _train_and_embed_ivectors(open_split, train_split, segment_length, feature_config, options: IVectorOptions,
                              test_inputs, seed, log) -> np.ndarray:
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


def format_table(report: dict) -> str:
    """The results as a fixed-width table, with the trial counts underneath."""
    lines = [f"{'embedding':<10} {'dim':>5} {'EER %':>8} {'minDCF':>8} {'trials':>9}"]
    for row in report["results"]:
        lines.append(f"{row['embedding']:<10} {row['dim']:>5} {100 * row['eer']:>8.2f} {row['min_dcf']:>8.4f} "
                     f"{row['trials']:>9}")
    lines.append(
        f"{report['source']}, split {report['split']}: {report['utterances']} utterances of {report['speakers']} "
        f"speakers ({report['skipped']['too_short']} skipped as too short); {report['target_trials']} target / "
        f"{report['nontarget_trials']} non-target trials ({report['protocol']}); minDCF at p_target "
        f"{report['p_target']:g}"
    )
    return "\n".join(lines)
