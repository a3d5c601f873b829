"""Which pairs of utterances are scored: every pair, or a trial list (VoxCeleb or NIST style)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from training.eval.metrics import EvaluationError


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


def keys_for(items: Sequence, kept: np.ndarray) -> dict[str, int]:
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
