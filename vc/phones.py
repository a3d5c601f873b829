"""What is said, frame by frame: the phone recogniser a model directory may carry (PHONES_FILE).

The conversion draws each frame onto the target's own envelopes. Picked by envelope, they are the
target's frames that look most alike, often of another phone, and the words suffer (issue 20); picked by
the DSAE's z, hardly better, since z says little of the phone. A phone recogniser trained on other
speakers (`training.phones`) says the same for every voice, so its posteriors are the key: each converted
frame takes the target's envelopes of the same sound.

Keys are the square roots of the posteriors: Euclidean distance between them is the Hellinger distance
between the two phone distributions.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

PHONES_FILE = "phones.onnx"
METADATA_KEY = "dsae_vc"


class PhonesError(ValueError):
    """A phones.onnx that cannot be used; the message names the file and the problem."""


class PhoneRecogniser:
    """An ONNX Runtime session of phones.onnx: raw log-magnitude frames (T, n_features) -> keys (T, P)."""

    def __init__(self, path: Path, session_factory, feature_config) -> None:
        self.path = Path(path)
        self._session = session_factory(self.path)
        meta = self._session.get_modelmeta().custom_metadata_map
        try:
            info = json.loads(meta[METADATA_KEY])
            self.phones = tuple(info["phones"])
            self.left_context = int(info["left_context"])
            self.right_context = int(info["right_context"])
            trained_features = info["feature_config"]
        except (KeyError, TypeError, ValueError) as exc:
            raise PhonesError(f"{self.path}: no usable '{METADATA_KEY}' metadata ({exc})") from None
        if trained_features != feature_config.to_dict():
            raise PhonesError(f"{self.path}: trained on other features than the model's "
                              f"({trained_features} against {feature_config.to_dict()})")
        self.n_features = feature_config.n_features
        self.info = info

    @property
    def n_phones(self) -> int:
        return len(self.phones)

    def keys(self, frames: np.ndarray) -> np.ndarray:
        """(T, n_features) raw frames of one recording -> (T, n_phones) float32 square-root posteriors."""
        frames = np.ascontiguousarray(frames, dtype=np.float32)
        if frames.ndim != 2 or frames.shape[1] != self.n_features:
            raise ValueError(f"phone keys need (frames, {self.n_features}), got {frames.shape}")
        if frames.shape[0] == 0:
            return np.zeros((0, self.n_phones), np.float32)
        posteriors = self._session.run(None, {"frames": frames[None]})[0]
        return np.sqrt(np.maximum(posteriors, 0.0)).astype(np.float32)


class StreamingPhones:
    """Keys of a stream's frames, a hop at a time, `delay` frames behind the newest (the first `delay` keys
    out are those of the silence before the stream). A frame's key sees min(delay, right_context) frames
    of its future; the rest of its right context is a repeat of the newest frame (as a file's last frames
    see), so with delay >= right_context the keys are the file's, else its newest frames' differ."""

    def __init__(self, recogniser: PhoneRecogniser, silence: float, *, delay: int = 0) -> None:
        self.recogniser, self.delay = recogniser, int(delay)
        self._past = np.full((recogniser.left_context + recogniser.right_context + self.delay,
                              recogniser.n_features), silence, np.float32)

    def push(self, frames: np.ndarray) -> np.ndarray:
        h, kept = frames.shape[0], self._past.shape[0]
        window = np.concatenate([self._past, frames], axis=0)
        self._past = window[window.shape[0] - kept:]
        keys = self.recogniser.keys(window)
        return keys[keys.shape[0] - self.delay - h:keys.shape[0] - self.delay]


def open_recogniser(model_dir: Path, session_factory, feature_config) -> PhoneRecogniser | None:
    """The model directory's phone recogniser, or None when it has none."""
    path = Path(model_dir) / PHONES_FILE
    return PhoneRecogniser(path, session_factory, feature_config) if path.is_file() else None
