"""The Sprites video data set of the DSAE paper, rendered from the Liberated Pixel Cup layers.

The published arrays were composited from LPC sprite sheets; this module reproduces them from the
layers in ``shared/data/sprites-lpc`` (art by the Liberated Pixel Cup and Universal-LPC-spritesheet
contributors, CC-BY-SA 3.0 / GPL 3.0) instead of downloading anything:

* a character is body, bottomwear, topwear, hair (indices 0-5 each) and shoes 1, alpha-composited in
  that order over black: 6**4 = 1296 characters, number ``216*body + 36*bottom + 6*top + hair``;
* 9 motions = 3 actions (walk, spellcast, slash) x 3 directions (front, left, right), label
  ``3*action + direction``, each T = 8 frames of 64x64 RGB;
* split by character with NumPy's legacy seed 423: the first 1000 of ``permutation(1296)`` train.

Frames are kept as uint8 (the published float arrays are RGB / 256, see ``to_float``): the training
split alone would be 3.5 GB as float32.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

CELL = 64
N_FRAMES = 8
ATTRIBUTES = ("body", "bottomwear", "topwear", "hair")
N_CHOICES = 6
N_CHARACTERS = N_CHOICES ** len(ATTRIBUTES)
SHOES = 1
SPLIT_SEED = 423
N_TRAIN_CHARACTERS = 1000

ACTIONS = ("walk", "spellcast", "slash")
DIRECTIONS = ("front", "left", "right")
N_MOTIONS = len(ACTIONS) * len(DIRECTIONS)

# First sheet row of each animation's block of four; inside a block: back, left, front, right.
_ACTION_ROW = {"spellcast": 0, "walk": 8, "slash": 12}
_DIRECTION_OFFSET = {"left": 1, "front": 2, "right": 3}
_ACTION_COLUMNS = {
    "walk": (8, 1, 2, 3, 4, 5, 6, 7),       # column 0 (standing) is skipped
    "spellcast": (0, 1, 2, 3, 4, 5, 4, 6),
    "slash": (0, 1, 2, 3, 4, 5, 4, 0),
}


def character_number(body: int, bottom: int, top: int, hair: int) -> int:
    return ((body * N_CHOICES + bottom) * N_CHOICES + top) * N_CHOICES + hair


def character_attributes(number: int) -> tuple[int, int, int, int]:
    if not 0 <= number < N_CHARACTERS:
        raise ValueError(f"character number {number} is outside 0..{N_CHARACTERS - 1}")
    body, rest = divmod(number, 216)
    bottom, rest = divmod(rest, 36)
    top, hair = divmod(rest, 6)
    return body, bottom, top, hair


def motion_label(action: str, direction: str) -> int:
    return 3 * ACTIONS.index(action) + DIRECTIONS.index(direction)


def split_characters() -> dict[str, np.ndarray]:
    """The published character split (NumPy legacy seeding, so it is stable across NumPy versions)."""
    order = np.random.RandomState(SPLIT_SEED).permutation(N_CHARACTERS)
    return {"train": order[:N_TRAIN_CHARACTERS], "test": order[N_TRAIN_CHARACTERS:]}


@dataclass(frozen=True)
class SpriteSet:
    """Frames (N, 8, 64, 64, 3) uint8 with per-sequence character numbers and motion labels."""
    frames: np.ndarray
    characters: np.ndarray
    motions: np.ndarray

    def attributes_onehot(self) -> np.ndarray:
        """(N, 8, 4, 6) float32, the published attribute layout (body, bottom, top, hair)."""
        attrs = np.array([character_attributes(int(c)) for c in self.characters], dtype=np.int64)
        onehot = np.eye(N_CHOICES, dtype=np.float32)[attrs]                      # (N, 4, 6)
        return np.repeat(onehot[:, None], N_FRAMES, axis=1)

    def motions_onehot(self) -> np.ndarray:
        """(N, 8, 9) float32, the published motion layout."""
        onehot = np.eye(N_MOTIONS, dtype=np.float32)[self.motions]
        return np.repeat(onehot[:, None], N_FRAMES, axis=1)


def to_float(frames: np.ndarray) -> np.ndarray:
    """uint8 frames as the published arrays stored them: RGB / 256."""
    return frames.astype(np.float32) / 256.0


class SpriteRenderer:
    """Composites characters from the LPC layers; each sheet is read once."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self._sheets: dict[tuple[str, int], np.ndarray] = {}
        for layer in ATTRIBUTES:
            for index in range(N_CHOICES):
                self._sheets[layer, index] = self._read_sheet(self.root / layer / f"{index}.png")
        self._sheets["shoes", SHOES] = self._read_sheet(self.root / "shoes" / f"{SHOES}.png")

    @staticmethod
    def _read_sheet(path: Path) -> np.ndarray:
        from PIL import Image  # Pillow ships with matplotlib, a training dependency

        if not path.is_file():
            raise ValueError(f"{path}: sprite layer not found (expected the LPC layout, see its README)")
        try:
            with Image.open(path) as image:
                sheet = np.asarray(image.convert("RGBA"), dtype=np.float32) / 255.0
        except OSError as exc:
            raise ValueError(f"{path}: not a readable PNG ({exc})") from None
        if sheet.shape[0] < 16 * CELL or sheet.shape[1] < 9 * CELL:
            raise ValueError(f"{path}: sheet is {sheet.shape[1]}x{sheet.shape[0]}, too small for LPC cells")
        return sheet

    def character_sheet(self, number: int) -> np.ndarray:
        """The whole sheet of one character, RGB float in [0, 1] over black."""
        body, bottom, top, hair = character_attributes(number)
        layers = [("body", body), ("bottomwear", bottom), ("topwear", top), ("hair", hair), ("shoes", SHOES)]
        rgb = np.zeros(self._sheets["body", 0].shape[:2] + (3,), dtype=np.float32)
        for key in layers:
            sheet = self._sheets[key]
            alpha = sheet[..., 3:]
            rgb = sheet[..., :3] * alpha + rgb * (1.0 - alpha)
        return rgb

    def sequences(self, number: int) -> np.ndarray:
        """(9, 8, 64, 64, 3) uint8: every motion of one character, in label order."""
        sheet = np.round(self.character_sheet(number) * 255.0).astype(np.uint8)
        out = np.empty((N_MOTIONS, N_FRAMES, CELL, CELL, 3), dtype=np.uint8)
        for action in ACTIONS:
            for direction in DIRECTIONS:
                row = _ACTION_ROW[action] + _DIRECTION_OFFSET[direction]
                for t, column in enumerate(_ACTION_COLUMNS[action]):
                    out[motion_label(action, direction), t] = sheet[
                        row * CELL:(row + 1) * CELL, column * CELL:(column + 1) * CELL]
        return out

    def render(self, characters: np.ndarray) -> SpriteSet:
        characters = np.asarray(characters, dtype=np.int64)
        frames = np.empty((len(characters) * N_MOTIONS, N_FRAMES, CELL, CELL, 3), dtype=np.uint8)
        for i, number in enumerate(characters):
            frames[i * N_MOTIONS:(i + 1) * N_MOTIONS] = self.sequences(int(number))
        return SpriteSet(frames=frames,
                         characters=np.repeat(characters, N_MOTIONS),
                         motions=np.tile(np.arange(N_MOTIONS), len(characters)))

    def render_split(self, split: str) -> SpriteSet:
        splits = split_characters()
        if split not in splits:
            raise ValueError(f"unknown Sprites split {split!r}; choose one of {sorted(splits)}")
        return self.render(splits[split])


def default_layer_root(repo_root: str | Path | None = None) -> Path | None:
    """Where the LPC layers are: $SPRITES_LPC, else ``../shared/data/sprites-lpc`` beside the repository."""
    import os

    given = os.environ.get("SPRITES_LPC")
    if given:
        return Path(given)
    repo_root = Path(repo_root) if repo_root else Path(__file__).resolve().parents[2]
    candidate = repo_root.parent / "shared" / "data" / "sprites-lpc"
    return candidate if candidate.is_dir() else None


def _cache_files(cache_dir: Path, split: str) -> dict[str, Path]:
    return {name: cache_dir / f"{split}_{name}.npy" for name in ("frames", "characters", "motions")}


def load_split(cache_dir: str | Path, split: str, *, layers: str | Path | None = None,
               mmap: bool = True) -> SpriteSet:
    """A split from the render cache in cache_dir, rendering it there first when it is absent.

    The cache holds plain .npy arrays (uint8 frames), written to temporary names and renamed, so an
    interrupted render leaves no half-written split behind.
    """
    cache_dir = Path(cache_dir)
    files = _cache_files(cache_dir, split)
    if not all(p.is_file() for p in files.values()):
        root = Path(layers) if layers else default_layer_root()
        if root is None or not root.is_dir():
            raise ValueError(f"{cache_dir}: no rendered Sprites {split!r} split, and no LPC layers to render it "
                             "from (set SPRITES_LPC to the sprites-lpc folder)")
        data = SpriteRenderer(root).render_split(split)
        cache_dir.mkdir(parents=True, exist_ok=True)
        for name, path in files.items():
            tmp = path.with_name(path.name + ".part.npy")
            np.save(tmp, getattr(data, name))
            tmp.replace(path)
    try:
        arrays = {name: np.load(path, mmap_mode="r" if mmap and name == "frames" else None, allow_pickle=False)
                  for name, path in files.items()}
    except (OSError, ValueError) as exc:
        raise ValueError(f"{cache_dir}: unreadable Sprites cache for split {split!r} ({exc})") from None
    frames = arrays["frames"]
    if frames.ndim != 5 or frames.shape[1:] != (N_FRAMES, CELL, CELL, 3) or frames.dtype != np.uint8:
        raise ValueError(f"{files['frames']}: expected (N, {N_FRAMES}, {CELL}, {CELL}, 3) uint8 frames, "
                         f"found {frames.shape} {frames.dtype}")
    if not len(frames) == len(arrays["characters"]) == len(arrays["motions"]):
        raise ValueError(f"{cache_dir}: the {split!r} frames, characters and motions differ in length")
    return SpriteSet(frames=frames, characters=np.asarray(arrays["characters"], dtype=np.int64),
                     motions=np.asarray(arrays["motions"], dtype=np.int64))
