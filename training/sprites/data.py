"""The Sprites video as a training set for `training.train` (``vc-train --data sprites``).

`SpritesDataset` offers what the trainer asks of a speech `SegmentDataset`: `len`, `batch(indices)` (float32
(B, 8, 12288): flattened CHW frames, RGB / 256), `partners` (for the same-"speaker" f swap: another motion
of the same character), `segment_speaker` / `speakers` (characters), `feature_dim`, and `mean` / `std`
(zeros and ones: pixels are not normalised), plus the `manifest` a run directory keeps so that export and
evaluation need only the run.
"""
from __future__ import annotations

import numpy as np

from training.data import sprites
from training.sprites.video import IMAGE_SHAPE, IMAGE_SIZE, frames_to_features

# The model the Sprites runs start from (vc-train --data sprites; training.config.default_options), and its
# objective: f swapped between motions of the same character, no adversary; see models/sprites/README.md.
SPRITES_MODEL = dict(
    feature_dim=12288, f_dim=64, z_dim=16, hidden_dim=128, frame_hidden=128, variant="full", frame_coder="conv64",
    conv_width=16, x_logvar=-2.3,
)
SPRITES_OBJECTIVE = dict(kl_warmup_steps=500, free_bits_z=0.0, f_swap_prob=1.0, adv_weight=0.0, adv_group_size=1)
DEFAULT_CACHE = "data/sprites"


class SpritesDataset:
    """One split of the rendered Sprites (the test split stands in for a dev set: the paper has none)."""

    def __init__(self, cache_dir: str, split: str, *, speakers=None):
        data = sprites.load_split(cache_dir, split)
        self.split = split
        self.frames = data.frames
        self.characters = data.characters
        self.motions = data.motions
        self.speakers = [str(c) for c in np.unique(self.characters)] if speakers is None else list(speakers)
        lookup = {int(c): i for i, c in enumerate(np.unique(self.characters))}
        self.segment_speaker = np.array([lookup[int(c)] for c in self.characters], dtype=np.int64)
        self.feature_dim = IMAGE_SIZE
        self.mean = np.zeros(IMAGE_SIZE, dtype=np.float32)
        self.std = np.ones(IMAGE_SIZE, dtype=np.float32)
        self.manifest = {
            "data": "sprites", "corpus": "sprites-lpc", "image_shape": list(IMAGE_SHAPE),
            "pixel_scale": "RGB / 256, channel-first, flattened", "segment_length": sprites.N_FRAMES,
            "feature_config": {}, "cache": str(cache_dir),
        }
        # Sequences come in runs of the 9 motions of one character (SpriteRenderer.render); partners rely on it.
        n = len(self.characters)
        if n % sprites.N_MOTIONS or not np.array_equal(self.motions, np.tile(np.arange(sprites.N_MOTIONS),
                                                                           n // sprites.N_MOTIONS)):
            raise ValueError(f"{cache_dir}: the {split!r} split is not in runs of {sprites.N_MOTIONS} motions per "
                             "character; render it again")

    def __len__(self) -> int:
        return len(self.frames)

    def batch(self, indices) -> np.ndarray:
        return frames_to_features(self.frames[np.asarray(indices, dtype=np.int64)])

    def partners(self, indices, rng: np.random.Generator) -> np.ndarray:
        """For each sequence, another motion of the same character."""
        indices = np.asarray(indices, dtype=np.int64)
        motion = indices % sprites.N_MOTIONS
        shift = rng.integers(1, sprites.N_MOTIONS, size=len(indices))
        return indices - motion + (motion + shift) % sprites.N_MOTIONS


def open_sprites(cache_dir: str) -> tuple[SpritesDataset, SpritesDataset]:
    train = SpritesDataset(cache_dir or DEFAULT_CACHE, "train")
    return train, SpritesDataset(cache_dir or DEFAULT_CACHE, "test", speakers=None)
