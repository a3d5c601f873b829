"""The Sprites renderer: its logic on small layer sheets built here, the published data on the real layers.

The real LPC layers are found through $SPRITES_LPC or ../shared/data/sprites-lpc beside the repository;
without them those tests are skipped (a fresh clone has neither).
"""
import numpy as np
import pytest

from training.data import sprites

LPC_ROOT = sprites.default_layer_root()
needs_layers = pytest.mark.skipif(
    LPC_ROOT is None or not LPC_ROOT.is_dir(),
    reason="LPC layers not found: set SPRITES_LPC or put sprites-lpc in ../shared/data")

ROWS, COLS = 21, 13


def _sheet(layer_code: int, index: int, box: tuple[int, int, int, int], alpha: float = 1.0) -> np.ndarray:
    """An RGBA sheet whose cell (row, col) holds a box coloured (layer_code, 10*row + col, index)."""
    sheet = np.zeros((ROWS * 64, COLS * 64, 4), dtype=np.uint8)
    y0, y1, x0, x1 = box
    for row in range(ROWS):
        for col in range(COLS):
            cell = sheet[row * 64:(row + 1) * 64, col * 64:(col + 1) * 64]
            cell[y0:y1, x0:x1] = (layer_code, 10 * row + col, 40 * index + 5, round(255 * alpha))
    return sheet


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory):
    from PIL import Image
    root = tmp_path_factory.mktemp("lpc")
    boxes = {"body": (8, 60, 16, 48), "bottomwear": (40, 56, 20, 44), "topwear": (24, 40, 18, 46),
             "hair": (6, 14, 22, 42)}
    for code, (layer, box) in enumerate(boxes.items(), start=1):
        (root / layer).mkdir()
        for index in range(6):
            Image.fromarray(_sheet(code * 50, index, box)).save(root / layer / f"{index}.png")
    (root / "shoes").mkdir()
    # shoes are half transparent: they show the compositing, over the body's feet
    Image.fromarray(_sheet(250, 1, (56, 60, 20, 30), alpha=0.5)).save(root / "shoes" / "1.png")
    return root


def test_published_split_sizes_and_disjointness():
    split = sprites.split_characters()
    assert len(split["train"]) == 1000 and len(split["test"]) == 296
    assert not set(split["train"]) & set(split["test"])
    assert sorted(np.concatenate([split["train"], split["test"]])) == list(range(1296))
    # Legacy seeding is what makes the published split reproducible.
    np.random.seed(423)
    assert np.array_equal(split["train"], np.random.permutation(1296)[:1000])


def test_character_numbering_round_trips():
    for number in (0, 1, 215, 216, 777, 1295):
        assert sprites.character_number(*sprites.character_attributes(number)) == number
    assert sprites.character_attributes(216 * 2 + 36 * 3 + 6 * 4 + 5) == (2, 3, 4, 5)
    with pytest.raises(ValueError, match="outside"):
        sprites.character_attributes(1296)


def test_frames_come_from_the_published_rows_and_columns(toy_root):
    seqs = sprites.SpriteRenderer(toy_root).sequences(sprites.character_number(1, 2, 3, 4))
    assert seqs.shape == (9, 8, 64, 64, 3) and seqs.dtype == np.uint8
    rows = {"spellcast": 0, "walk": 8, "slash": 12}
    offsets = {"left": 1, "front": 2, "right": 3}
    columns = {"walk": (8, 1, 2, 3, 4, 5, 6, 7), "spellcast": (0, 1, 2, 3, 4, 5, 4, 6),
               "slash": (0, 1, 2, 3, 4, 5, 4, 0)}
    for action in sprites.ACTIONS:
        for direction in sprites.DIRECTIONS:
            label = sprites.motion_label(action, direction)
            for t in range(8):
                # the green channel of a body pixel is 10 * row + column of the cell it was cut from
                assert seqs[label, t, 50, 17, 1] == 10 * (rows[action] + offsets[direction]) + columns[action][t]


def test_layers_are_composited_in_order_over_black(toy_root):
    renderer = sprites.SpriteRenderer(toy_root)
    frame = renderer.sequences(sprites.character_number(1, 2, 3, 4))[0, 0]
    assert frame[0, 0].tolist() == [0, 0, 0]                 # background
    assert frame[50, 17, 0] == 50 and frame[50, 17, 2] == 45     # body, index 1
    assert frame[45, 30, 0] == 100 and frame[45, 30, 2] == 85    # bottomwear over body, index 2
    assert frame[30, 30, 0] == 150 and frame[30, 30, 2] == 125   # topwear, index 3
    assert frame[10, 30, 0] == 200 and frame[10, 30, 2] == 165   # hair over body, index 4
    # half-transparent shoes over the body (and over the pants where they overlap)
    alpha = 128 / 255
    assert abs(int(frame[58, 25, 0]) - (alpha * 250 + (1 - alpha) * 50)) <= 1
    other_hair = renderer.sequences(sprites.character_number(1, 2, 3, 0))[0, 0]
    changed = np.any(frame != other_hair, axis=-1)
    assert changed[6:14, 22:42].all() and changed.sum() == 8 * 20


def test_render_labels(toy_root):
    data = sprites.SpriteRenderer(toy_root).render(np.array([0, 1295]))
    assert list(data.motions[:9]) == list(range(9)) and list(data.characters) == [0] * 9 + [1295] * 9
    assert data.attributes_onehot().shape == (18, 8, 4, 6)
    assert data.motions_onehot().shape == (18, 8, 9)
    assert np.allclose(sprites.to_float(data.frames[:1]).max(), data.frames[:1].max() / 256.0)


def test_cache_without_layers_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("SPRITES_LPC", str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="no LPC layers"):
        sprites.load_split(tmp_path / "cache", "test")


def test_missing_layer_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="sprite layer not found"):
        sprites.SpriteRenderer(tmp_path)


def test_small_sheet_is_a_clear_error(toy_root, tmp_path):
    import shutil

    from PIL import Image
    root = tmp_path / "lpc"
    shutil.copytree(toy_root, root)
    Image.fromarray(np.zeros((64, 64, 4), dtype=np.uint8)).save(root / "hair" / "2.png")
    with pytest.raises(ValueError, match="too small"):
        sprites.SpriteRenderer(root)


@needs_layers
def test_rendered_sequences_have_the_published_structure():
    data = sprites.SpriteRenderer(LPC_ROOT).render(np.array([0, 1295]))
    assert data.frames.shape == (18, 8, 64, 64, 3) and data.frames.dtype == np.uint8
    walk_front = data.frames[sprites.motion_label("walk", "front")]
    # A walk cycle moves: consecutive frames differ, and the character is drawn over black.
    assert all(np.abs(walk_front[t].astype(int) - walk_front[t + 1]).sum() > 0 for t in range(7))
    assert walk_front[0, 0, 0].tolist() == [0, 0, 0]
    assert (walk_front[0].sum(-1) > 0).mean() > 0.05
    # slash ends where it started (column 0 twice), spellcast repeats column 4.
    slash = data.frames[sprites.motion_label("slash", "left")]
    assert np.array_equal(slash[0], slash[7]) and np.array_equal(slash[4], slash[6])
    assert not np.array_equal(data.frames[0], data.frames[9])


@needs_layers
def test_real_layers_change_only_what_they_cover():
    renderer = sprites.SpriteRenderer(LPC_ROOT)
    a = renderer.sequences(sprites.character_number(0, 0, 0, 0))
    b = renderer.sequences(sprites.character_number(0, 0, 0, 3))  # other hair
    changed = np.any(a != b, axis=-1)
    assert 0 < changed.mean() < 0.2
