"""The utterances of one split, from a corpus (featurised on demand) or from a feature cache."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.eval.baselines import feature_setting
from training.eval.metrics import EvaluationError


@dataclass
class Utterance:
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
        self.items = [Utterance(r.speaker, r.utterance, str(r.path)) for r in records]
        self.feature_config = feature_config

    def frames(self, index: int) -> np.ndarray:
        from training.data.audio import AudioError, load_audio
        from vc.dsp import log_magnitude

        item = self.items[index]
        try:
            audio = load_audio(item.path, sr=int(feature_setting(self.feature_config, "sr")))
        except AudioError as exc:
            raise EvaluationError(str(exc)) from None
        return np.asarray(log_magnitude(audio, cfg=self.feature_config), dtype=np.float32)


class _CacheFrames:
    """Utterances of one split of a feature cache written by ``vc-features`` (README contract)."""

    def __init__(self, cache, split: str):
        from training.data.cache import FeatureCacheError

        try:
            self.split = cache.split(split)
        except FeatureCacheError as exc:
            raise EvaluationError(str(exc)) from None
        self.items = [Utterance(u.speaker, u.utterance, u.path) for u in self.split.utterances]
        self.feature_config = cache.config
        self.skipped_by_cache = sum(1 for entry in cache.manifest.get("skipped", []) if entry.get("split") == split)

    def frames(self, index: int) -> np.ndarray:
        return np.asarray(self.split.utterance_frames(index), dtype=np.float32)


def open_data(data: Path, split: str | None, feature_config):
    """(opener of a split's frames, description, split actually used) for a corpus or a feature cache."""
    if (data / "manifest.json").is_file():
        from training.data.cache import FeatureCache, FeatureCacheError

        try:
            cache = FeatureCache(data)
        except FeatureCacheError as exc:
            raise EvaluationError(str(exc)) from None
        if feature_config is not None and cache.config.hash() != feature_config.hash():
            raise EvaluationError(
                f"{data}: the feature cache was made with feature config {cache.config.hash()}, the model "
                f"expects {feature_config.hash()}"
            )
        info = cache.manifest.get("corpus_info")
        kind = info.get("kind") if isinstance(info, dict) else None
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
