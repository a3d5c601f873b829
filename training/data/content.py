"""Frame-level content targets for a feature cache: what was said, from a speech recogniser's encoder.

The DSAE's 200 ms segments carry no text of their own, so the content term of the objective
(`Objective.content_weight`, training.dsae) asks z_t to predict, frame by frame, the features that Whisper
base's encoder (last layer, 512 values every 20 ms) gives for the same instant. A recogniser's encoder is
trained to keep the words whoever speaks, so these targets carry the phones and little of the voice; they
are reduced to `dim` principal components (fitted on the train split, each scaled to unit variance) to keep
the cache small and the head cheap.

Layout, beside the features (README, "Feature cache")::

    CACHE/content.json             source, model hash, dim, the features' inputs_hash, per-split frame counts
    CACHE/content-basis.npz        mean (1500, 512) per encoder position, basis (512, dim), scale (dim,)
    CACHE/<split>/content.npy      float16 (n_frames, dim), row i belongs to frames.npy row i

Utterances are packed into 30 s windows (Whisper's fixed input length: encoding a 3 s file costs as much
as a 30 s one) with 100 ms of silence between them. A split already written with the same inputs is kept,
so an interrupted build resumes split by split.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Iterator

import numpy as np

from training.data.audio import load_audio
from training.data.cache import FeatureCache, FeatureCacheError

CONTENT_FORMAT = "dsae-vc-content/2"
WINDOW_SECONDS = 30
GAP_SECONDS = 0.1
ENCODER_HOP_SECONDS = 0.02
FIT_WINDOWS = 120          # windows of the train split that the projection is fitted on
MIN_POSITION_WINDOWS = 16  # fewer windows than this (a tiny corpus) give no per-position mean


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class WhisperEncoder:
    """Whisper's encoder on 30 s windows of 16 kHz audio -> (1500, 512) float32 per window."""

    def __init__(self, model_dir: os.PathLike | str, *, threads: int = 1):
        import ctranslate2
        from faster_whisper.feature_extractor import FeatureExtractor

        self.model_dir = Path(model_dir)
        self.model_hash = _sha256(self.model_dir / "model.bin")
        self._model = ctranslate2.models.Whisper(str(self.model_dir), device="cpu", compute_type="int8",
                                                 intra_threads=threads)
        self._mel = FeatureExtractor()
        self.sr = self._mel.sampling_rate
        self.window = WINDOW_SECONDS * self.sr

    def __call__(self, windows: list[np.ndarray]) -> np.ndarray:
        import ctranslate2

        frames = self._mel.nb_max_frames
        mels = []
        for audio in windows:
            mel = self._mel(audio)[:, :frames]
            mels.append(np.pad(mel, ((0, 0), (0, frames - mel.shape[1]))))
        out = self._model.encode(ctranslate2.StorageView.from_array(np.stack(mels).astype(np.float32)))
        return np.asarray(out, dtype=np.float32)


def _pack(utterances, read) -> Iterator[tuple[np.ndarray, list[tuple[int, int, int]]]]:
    """Windows of audio and, per utterance placed in it, (utterance index, sample offset, n_samples).

    An utterance longer than a window is cut into window-long pieces, each its own window."""
    window = WINDOW_SECONDS * 16000
    gap = np.zeros(int(GAP_SECONDS * 16000), np.float32)
    parts, placed, used = [], [], 0
    for utt in utterances:
        audio = read(utt)
        if used and used + audio.size > window:
            yield np.concatenate(parts), placed
            parts, placed, used = [], [], 0
        if audio.size > window:
            for start in range(0, audio.size, window):
                yield audio[start:start + window], [(utt.index, -start, audio.size)]
            continue
        placed.append((utt.index, used, audio.size))
        parts += [audio, gap]
        used += audio.size + gap.size
    if parts:
        yield np.concatenate(parts), placed


def _rows_of(offset: int, n_frames: int, hop_length: int, n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Where the DSAE frames of one utterance placed at `offset` samples (negative: the window starts that
    far into the utterance) are in the encoder's output: (indices of the frames inside the window, their
    encoder rows)."""
    frame_time = (np.arange(n_frames) * hop_length + offset) / 16000.0
    inside = (frame_time >= 0) & (frame_time < WINDOW_SECONDS)
    rows = np.minimum((frame_time[inside] / ENCODER_HOP_SECONDS).astype(np.int64), n_rows - 1)
    return np.flatnonzero(inside), rows


def build_content_targets(cache_dir: os.PathLike | str, model_dir: os.PathLike | str, *, dim: int = 64,
                          splits=("train", "dev"), threads: int = 1, batch: int = 2, log=print) -> dict:
    """Write CACHE/<split>/content.npy for the given splits of a feature cache (layout: module docstring)."""
    cache_dir = Path(cache_dir)
    cache = FeatureCache(cache_dir)
    encoder = WhisperEncoder(model_dir, threads=threads)
    hop = cache.manifest["feature_config"]["hop_length"]
    if int(cache.manifest["feature_config"]["sr"]) != encoder.sr:
        raise FeatureCacheError(f"{cache_dir}: content targets need 16 kHz features")
    key = {"format": CONTENT_FORMAT, "source": "whisper-base encoder, last layer", "model_sha256": encoder.model_hash,
           "dim": int(dim), "inputs_hash": cache.manifest.get("inputs_hash"), "window_seconds": WINDOW_SECONDS}
    meta_path = cache_dir / "content.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    if {k: meta.get(k) for k in key} != key:
        meta = dict(key, splits={})
    basis_path = cache_dir / "content-basis.npz"
    projection = dict(np.load(basis_path, allow_pickle=False)) if meta["splits"] and basis_path.is_file() else None

    def read(utt):
        return load_audio(utt.path, sr=encoder.sr).astype(np.float32)

    for split in splits:
        if split in meta["splits"] and (cache_dir / split / "content.npy").is_file():
            log(f"content targets: {split} already written")
            continue
        data = cache.split(split)
        out_path = cache_dir / split / "content.npy"
        tmp = out_path.with_suffix(".tmp.npy")
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=(data.frames.shape[0], dim))
        filled = np.zeros(data.frames.shape[0], bool)
        utterances = {u.index: u for u in data.utterances}
        pending: list = []        # (window audio, placements) not yet encoded
        held: list = []           # encoded windows kept until the projection is fitted

        def write(encoded, placed):
            for index, offset, _ in placed:
                utt = utterances[index]
                frames, rows = _rows_of(offset, utt.n_frames, hop, encoded.shape[0])
                target = (encoded[rows] - projection["mean"][rows]) @ projection["basis"] / projection["scale"]
                out[utt.frame_start + frames] = target.astype(np.float16)
                filled[utt.frame_start + frames] = True

        def flush(final=False):
            nonlocal projection
            if pending:
                encoded = encoder([w for w, _ in pending])
                held.extend((e, placed) for e, (_, placed) in zip(encoded, pending))
                pending.clear()
            if projection is None and len(held) < FIT_WINDOWS and not final:
                return
            if projection is None:
                projection = _fit_projection([e for e, _ in held], dim)
                np.savez(basis_path, **projection)
            for e, placed in held:
                write(e, placed)
            held.clear()

        from tqdm import tqdm
        for window, placed in tqdm(_pack(data.utterances, read), desc=f"content {split}", unit="window",
                                   mininterval=30):
            pending.append((window, placed))
            if len(pending) == batch:
                flush()
        flush(final=True)
        if not filled.all():
            raise FeatureCacheError(f"{cache_dir / split}: {int((~filled).sum())} frames got no content target")
        out.flush()
        os.replace(tmp, out_path)
        meta["splits"][split] = int(filled.size)
        meta_path.write_text(json.dumps(meta, indent=2))
        log(f"content targets: {split}: {filled.size} frames")
    return meta


def _fit_projection(encoded: list[np.ndarray], dim: int) -> dict:
    """Mean (1500, 512) per encoder position, and the top `dim` principal directions of what is left.

    Whisper adds a position embedding to every row, and half of the output's energy is where in the 30 s
    window a row lies, not what was said there; the top components of the raw rows are mostly that. So
    each row is taken relative to the mean of its position over many windows first."""
    windows = np.stack(encoded).astype(np.float64)
    if len(encoded) >= MIN_POSITION_WINDOWS:
        mean = windows.mean(0)
    else:   # a position's mean over a few windows is mostly what they say there: one mean for all rows
        mean = np.broadcast_to(windows.mean((0, 1)), windows.shape[1:]).copy()
    rows = (windows - mean).reshape(-1, windows.shape[-1])
    cov = np.cov(rows, rowvar=False)
    values, vectors = np.linalg.eigh(cov)
    top = np.argsort(values)[::-1][:dim]
    return {"mean": mean.astype(np.float32), "basis": vectors[:, top].astype(np.float32),
            "scale": np.sqrt(np.maximum(values[top], 1e-8)).astype(np.float32)}


def load_content_targets(cache_dir: os.PathLike | str, split: str, n_frames: int) -> np.ndarray | None:
    """The split's content targets as a read-only memmap, or None when the cache has none."""
    path = Path(cache_dir) / split / "content.npy"
    if not path.is_file():
        return None
    targets = np.load(path, mmap_mode="r", allow_pickle=False)
    if targets.ndim != 2 or targets.shape[0] != n_frames or targets.dtype != np.float16:
        raise FeatureCacheError(f"{path}: expected float16 ({n_frames}, dim) content targets, "
                                f"got {targets.dtype} {targets.shape}")
    return targets
