"""The Sprites video DSAE: conv frame coders inside the unchanged DSAE, vc-train --data sprites (checkpoints,
resume), vc-export to ONNX with image-shaped graphs checked against PyTorch, the judge and the measures.

Everything runs on a tiny render cache written here (a few characters drawn as coloured blocks that move
with the motion), so no LPC layers are needed.
"""
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from training.cli import export as export_cli
from training.cli import train as train_cli
from training.data import sprites
from training.dsae import DSAE, DSAEConfig
from training.sprites.data import SpritesDataset
from training.sprites.evaluate import (PAPER_NAMES, evaluate_sprites, kl_divergence, motion_scores, paper_table,
                                       swap_partners, table_row)
from training.sprites.judge import HEADS, FrameJudge, SpritesJudge, load_judge, train_judge
from training.train import load_model
from training.sprites.video import features_to_frames, frames_to_features

TINY = {"f_dim": 6, "z_dim": 3, "hidden_dim": 16, "frame_hidden": 16, "conv_width": 4}


def _toy_frames(character: int, motion: int) -> np.ndarray:
    body, bottom, top, hair = sprites.character_attributes(character)
    seq = np.zeros((8, 64, 64, 3), dtype=np.uint8)
    for t in range(8):
        y = 8 + 4 * (motion // 3) + (t % 4)
        x = 8 + 12 * (motion % 3) + t
        seq[t, y:y + 8, x:x + 12] = (40 * body + 20, 40 * bottom + 20, 40 * top + 20)
        seq[t, y + 8:y + 12, x:x + 12] = (200, 40 * hair, 100)
    return seq


def _write_cache(root, split, characters):
    frames = np.stack([_toy_frames(c, m) for c in characters for m in range(9)])
    root.mkdir(parents=True, exist_ok=True)
    np.save(root / f"{split}_frames.npy", frames)
    np.save(root / f"{split}_characters.npy", np.repeat(np.asarray(characters, dtype=np.int64), 9))
    np.save(root / f"{split}_motions.npy", np.tile(np.arange(9, dtype=np.int64), len(characters)))


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("sprites") / "cache"
    _write_cache(root, "train", [0, 259, 518, 777, 1036, 1295])
    _write_cache(root, "test", [43, 1252, 100, 200, 300, 400, 500, 600, 700, 800, 900, 1000])   # figures need 12
    return root


@pytest.fixture(scope="module")
def run(cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "run"
    config = tmp_path_factory.mktemp("cfg") / "c.json"
    config.write_text(json.dumps({"model": TINY, "objective": {"kl_warmup_steps": 0}, "val_max_segments": 8}))
    assert train_cli.main(["--data", "sprites", "--features", str(cache), "--out", str(out), "--config",
                           str(config), "--epochs", "1", "--batch-size", "8", "--threads", "1",
                           "--no-progress"]) == 0
    return out


def test_frames_round_trip_through_features():
    seq = _toy_frames(777, 4)
    x = frames_to_features(seq)
    assert x.shape == (8, 3 * 64 * 64) and x.dtype == np.float32 and x.max() < 1.0
    assert np.array_equal(features_to_frames(x), seq)
    # channel-first: the first 4096 numbers are the red plane
    assert np.allclose(x[3, :4096].reshape(64, 64), seq[3, :, :, 0] / 256.0)


@pytest.mark.parametrize("variant", ["full", "factorised"])
def test_conv_coders_plug_into_the_same_dsae_and_loss(variant):
    torch.manual_seed(0)
    model = DSAE(DSAEConfig(feature_dim=12288, frame_coder="conv64", variant=variant, x_logvar=-2.3, **TINY))
    x = torch.rand(2, 8, 12288)
    loss, terms = model(x)
    loss.backward()
    assert torch.isfinite(loss) and set(terms) >= {"recon", "kl_f", "kl_z", "elbo"}
    assert model.frame_encoder.conv[0].weight.grad.abs().sum() > 0
    f, _, z, _ = model.encode(x)
    assert model.decode(f, z).shape == (2, 8, 12288)
    assert 0 <= float(model.generate(3, 5).min()) and float(model.generate(3, 5).max()) <= 1
    with pytest.raises(ValueError, match="feature_dim 12288"):
        DSAEConfig(feature_dim=200, frame_coder="conv64")
    with pytest.raises(ValueError, match="frame_coder"):
        DSAEConfig(frame_coder="conv32")


def test_speech_model_keeps_its_parameter_names():
    names = set(DSAE(DSAEConfig()).state_dict())
    assert {"frame_encoder.net.0.weight", "frame_encoder.net.2.weight", "frame_decoder.net.4.weight",
            "f_lstm.weight_ih_l0", "x_logvar"} <= names
    assert not any("conv" in n for n in names)
    assert DSAEConfig.from_dict({"feature_dim": 200}).frame_coder == "mlp"   # configs written before video


def test_partners_are_other_motions_of_the_same_character(cache):
    data = SpritesDataset(str(cache), "train")
    idx = np.arange(len(data))
    partner = data.partners(idx, np.random.default_rng(0))
    assert np.array_equal(data.characters[partner], data.characters)
    assert not np.any(data.motions[partner] == data.motions)
    assert data.batch([0, 5]).shape == (2, 8, 12288)


def test_training_checkpoints_resume_and_rejects_a_missing_cache(run, cache, tmp_path, capsys, monkeypatch):
    config = json.loads((run / "config.json").read_text())
    assert config["data"] == "sprites" and config["model"]["frame_coder"] == "conv64"
    # the data kind's objective under what the config file gave: same-character f swap, no adversary
    assert config["objective"]["f_swap_prob"] == 1.0 and config["objective"]["adv_weight"] == 0.0
    assert config["objective"]["kl_warmup_steps"] == 0
    model, state = load_model(run)
    assert state["epoch"] == 1 and model.config.frame_coder == "conv64"
    assert np.isfinite(state["history"][-1]["val_elbo"])
    assert train_cli.main(["--out", str(run), "--resume", "--epochs", "2", "--no-progress"]) == 0
    assert load_model(run)[1]["epoch"] == 2
    monkeypatch.setenv("SPRITES_LPC", str(tmp_path / "no-layers"))     # or it would render the real split
    capsys.readouterr()
    assert train_cli.main(["--data", "sprites", "--features", str(tmp_path / "none"), "--out",
                           str(tmp_path / "r"), "--no-progress"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no rendered Sprites" in err[0] and "SPRITES_LPC" in err[0]


def test_export_writes_image_shaped_graphs_that_match_pytorch(run, tmp_path):
    out = tmp_path / "model"
    assert export_cli.main([str(run), "-o", str(out)]) == 0
    meta = json.loads({p.key: p.value for p in onnx.load(str(out / "encoder.onnx")).metadata_props}["dsae"])
    assert meta["image_shape"] == [3, 64, 64] and meta["data"] == "sprites" and meta["layout"] == "B,T,C,H,W"
    model, _ = load_model(run)
    model.eval()
    x = np.random.default_rng(1).random((3, 5, 3, 64, 64), dtype=np.float32)   # batch and T unlike the export's
    enc = ort.InferenceSession(str(out / "encoder.onnx"), providers=["CPUExecutionProvider"])
    dec = ort.InferenceSession(str(out / "decoder.onnx"), providers=["CPUExecutionProvider"])
    f, f_logvar, z, z_logvar = enc.run(None, {"x": x})
    with torch.no_grad():
        ref = model.encode(torch.from_numpy(x.reshape(3, 5, -1)))
        ref_x = model.decode(ref[0], ref[2]).numpy().reshape(3, 5, 3, 64, 64)
    assert max(float(np.abs(a - b.numpy()).max()) for a, b in zip((f, f_logvar, z, z_logvar), ref)) < 1e-4
    x_mean = dec.run(None, {"f": f, "z": z})[0]
    assert x_mean.shape == (3, 5, 3, 64, 64) and np.abs(x_mean - ref_x).max() < 1e-4
    assert json.loads((out / "export.json").read_text())["parity_max_abs"] < 1e-4


def test_judge_trains_saves_and_loads(cache, tmp_path):
    card = train_judge(str(cache), str(tmp_path / "judge"), epochs=1, batch_size=16, log=lambda m: None)
    assert set(card["test"]) == {f"judge_acc_{h}" for h in HEADS} | {"judge_acc_min"}
    judge = load_judge(tmp_path / "judge")
    probs = judge.predict_proba(torch.rand(2, 8, 12288))
    assert [p.shape for p in probs] == [(2, 6)] * 4 + [(2, 9)]
    with pytest.raises(ValueError, match="no such file"):
        load_judge(tmp_path)


def test_motion_scores_on_known_distributions():
    uniform = motion_scores(np.full((9, 9), 1 / 9))
    assert np.isclose(uniform["inception_score"], 1) and np.isclose(uniform["h_y_given_x"], np.log(9))
    sure = motion_scores(np.eye(9))
    assert np.isclose(sure["inception_score"], 9, atol=1e-6) and np.isclose(sure["h_y"], np.log(9))
    assert abs(sure["h_y_given_x"]) < 1e-6


def test_paper_table_arithmetic_on_known_distributions():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(6), size=(4, 8))
    same = table_row(p, p)
    assert same["disagreement"] == 0 and abs(same["kl_recon"]) < 1e-12
    # uniform data: KL-random is zero; one-hot data: KL[uniform || one-hot] is -log 6 - (5/6) log(floor)
    assert abs(table_row(p, np.full((4, 8, 6), 1 / 6))["kl_random"]) < 1e-12
    one_hot = np.eye(6)[rng.integers(0, 6, size=(4, 8))]
    floor = 1e-12 / (1 + 5e-12)                         # clipped, then renormalised
    assert np.isclose(table_row(one_hot, one_hot)["kl_random"], -np.log(6) - 5 / 6 * np.log(floor))
    # a data judge nearly sure (wrong classes at 3e-6) gives the paper's kind of KL-random, ~8.8 nats
    sure = np.full((1, 6), 3e-6)
    sure[0, 0] = 1 - 5 * 3e-6
    assert 8.7 < table_row(sure, sure)["kl_random"] < 8.9
    # disagreement counts frames whose top class moved; KL-recon against a closed form on two classes
    gen = one_hot.copy()
    gen[0, :3] = np.roll(one_hot[0, :3], 1, axis=-1)
    assert table_row(gen, one_hot)["disagreement"] == 3 / 32
    a, b = np.array([0.9, 0.1]), np.array([0.6, 0.4])
    assert np.isclose(kl_divergence(a, b), 0.9 * np.log(1.5) + 0.1 * np.log(0.25))
    assert np.isfinite(kl_divergence(np.array([0.5, 0.5]), np.array([1.0, 0.0])))      # zeros are clipped


@pytest.fixture(scope="module")
def frame_judge(cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("frame-judge")
    card = train_judge(str(cache), str(out), epochs=1, batch_size=16, kind="frame", log=lambda m: None)
    assert card["kind"] == "frame" and set(card["test"]) == {f"judge_acc_{h}" for h in HEADS} | {"judge_acc_min"}
    return out


def test_frame_judge_predicts_every_frame_and_loads_by_kind(frame_judge, tmp_path):
    judge = load_judge(frame_judge, kind="frame")
    assert isinstance(judge, FrameJudge)
    probs = judge.predict_proba(torch.rand(3, 5, 12288))
    assert [p.shape for p in probs] == [(3, 5, 6)] * 4 + [(3, 5, 9)]
    assert all(p.dtype == np.float64 and np.allclose(p.sum(-1), 1) for p in probs)
    # each frame on its own: a frame's prediction does not depend on its neighbours
    x = torch.rand(1, 4, 12288)
    assert np.allclose(judge.predict_proba(x)[0][0, 2], judge.predict_proba(x[:, 2:3])[0][0, 0])
    with pytest.raises(ValueError, match="where a sequence judge is needed"):
        load_judge(frame_judge)


class _Identity(torch.nn.Module):
    """A model whose reconstructions are its inputs."""

    def encode(self, x):
        return x, None, x, None

    def decode(self, f, z):
        return z


def test_paper_table_on_the_test_frames(run, cache, frame_judge):
    test = SpritesDataset(str(cache), "test")
    judge = load_judge(frame_judge, kind="frame")
    perfect = paper_table(_Identity(), judge, test, batch_size=50)
    assert perfect["n_test_frames"] == 108 * 8
    for attr in PAPER_NAMES:
        assert perfect[f"disagreement_{attr}"] == 0 and abs(perfect[f"kl_recon_{attr}"]) < 1e-9
        assert perfect[f"kl_random_{attr}"] > 0
    model, _ = load_model(run)
    table = paper_table(model, judge, test, batch_size=50)
    assert PAPER_KEYS <= set(table)
    assert all(0 <= table[f"disagreement_{a}"] <= 1 and table[f"kl_recon_{a}"] >= 0 for a in PAPER_NAMES)
    # KL-random reads only the data frames: the same for any model
    assert all(np.isclose(table[f"kl_random_{a}"], perfect[f"kl_random_{a}"]) for a in PAPER_NAMES)


def test_trajectories_share_one_code(run, cache, frame_judge):
    from training.sprites.trajectories import polygon_points, shared_code_probs, source_shares
    corners = polygon_points(np.eye(6))
    assert np.allclose(np.linalg.norm(corners, axis=1), 1) and np.allclose(corners[0], [0, 1])
    assert np.allclose(polygon_points(np.full(9, 1 / 9)), 0)
    model, _ = load_model(run)
    model.eval()
    decoded = []
    decode = model.decode
    model.decode = lambda f, z: decoded.append((f, z)) or decode(f, z)      # generate decodes through it too
    test = SpritesDataset(str(cache), "test")
    traj = shared_code_probs(model, load_judge(frame_judge, kind="frame"), test, n=20)
    assert [p.shape for p in traj["shared_f"]] == [(20, 8, 6)] * 4 + [(20, 8, 9)]
    (f_a, z_a), (f_b, z_b) = decoded
    with torch.no_grad():
        f_src, _, z_src, _ = model.encode(torch.from_numpy(test.batch([traj["source"]])))
    # shared f: the source's f in every row, z differing; shared z: the source's z, f differing
    assert torch.allclose(f_a, f_src.expand(20, -1)) and not torch.allclose(z_a[0], z_a[1])
    assert torch.allclose(z_b, z_src.expand(20, -1, -1)) and not torch.allclose(f_b[0], f_b[1])
    shares = source_shares(traj)
    assert set(shares) == {f"traj_{c}_source_{a}" for c in ("shared_f", "shared_z") for a in PAPER_NAMES}
    assert all(0 <= v <= 1 for v in shares.values())


def test_swap_partners_differ_in_character_and_motion():
    chars, motions = np.repeat(np.arange(4), 9), np.tile(np.arange(9), 4)
    p = swap_partners(chars, motions, np.random.default_rng(0))
    assert np.all(chars[p] != chars) and np.all(motions[p] != motions)


def test_measures_have_the_issue_keys_and_are_rates(run, cache):
    model, _ = load_model(run)
    result = evaluate_sprites(model, SpritesJudge(), SpritesDataset(str(cache), "test"), batch_size=7)
    keys = {"acc_motion", "acc_body", "acc_bottom", "acc_top", "acc_hair", "inception_score", "h_y_given_x",
            "h_y", "swap_acc_attributes", "swap_acc_motion", "judge_acc_min"}
    assert keys <= set(result)
    assert all(0 <= result[k] <= 1 for k in keys - {"inception_score", "h_y_given_x", "h_y"})
    assert 1 <= result["inception_score"] <= 9 and result["n_test_sequences"] == 108


def _tool(name):
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parents[1] / "tools" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


PAPER_KEYS = {f"{m}_{a}" for m in ("disagreement", "kl_recon", "kl_random")
              for a in ("skin", "pants", "tops", "hair", "action")}


def test_eval_and_figure_tools_on_a_tiny_run(run, cache, frame_judge, tmp_path, capsys):
    train_judge(str(cache), str(tmp_path / "judge"), epochs=1, batch_size=16, log=lambda m: None)
    eval_tool = _tool("eval_sprites")
    args = ["--model", str(run), "--judge", str(tmp_path / "judge"), "--frame-judge", str(frame_judge),
            "--cache", str(cache)]
    assert eval_tool.main(args + ["--json", "--out", str(tmp_path / "eval.json"), "--figures",
                                  str(tmp_path / "traj")]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads((tmp_path / "eval.json").read_text())
    assert set(printed["floors"]) <= set(printed) and printed["floors"]["acc_motion"] == 0.85
    # the paper's 15 numbers, and the issue's bound on the static attributes' disagreement
    assert PAPER_KEYS <= set(printed) and printed["ceilings"]["disagreement_skin"] == 0.10
    assert printed["floors_met"]["disagreement_hair"] == (printed["disagreement_hair"] <= 0.10)
    from PIL import Image
    for name in ("trajectories_shared_f.png", "trajectories_shared_z.png"):
        with Image.open(tmp_path / "traj" / name) as image:
            assert image.size[0] > 1000
    for bad in (["--model", str(tmp_path / "nothing")], ["--frame-judge", str(tmp_path / "judge")]):
        assert eval_tool.main(args + bad) == 1        # no model; a sequence judge given as the frame judge
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and ("nothing" in err[0] or "where a frame judge is needed" in err[0])
    figures = _tool("sprites_figures")
    assert figures.main(["--model", str(run), "--cache", str(cache), "--out", str(tmp_path / "fig")]) == 0
    from PIL import Image
    with Image.open(tmp_path / "fig" / "swap_grid.gif") as gif:
        assert gif.n_frames == 8 and gif.size == (7 * 68 + 4, 7 * 68 + 4)


def test_shipped_model_and_configs_load(tmp_path):
    """models/sprites (v2) loads with its video options; its stage configs give those runs; and a checkpoint
    in the form written before the objective left DSAEConfig (objective keys in the model config, as v1
    shipped) still loads into the same network."""
    import shutil
    from pathlib import Path

    from training.config import TrainConfig, load_config_file
    root = Path(__file__).resolve().parents[1] / "models" / "sprites"
    model, state = load_model(root / "checkpoint", root / "checkpoint")
    c = model.config
    assert c.frame_coder == "conv64" and c.n_speakers == 0 and c.x_logvar == -5.5
    assert c.conv_film and c.conv_norm_encodings and state["global_step"] > 0
    old = tmp_path / "old"
    shutil.copytree(root / "checkpoint", old)
    old_state = json.loads((old / "state.json").read_text())
    old_state["model_config"].update({"kl_warmup_steps": 1500, "free_bits_z": 0.0, "f_swap_prob": 1.0,
                                      "adv_weight": 0.0, "adv_group_size": 1})
    (old / "state.json").write_text(json.dumps(old_state))
    assert load_model(old, old)[0].config == c
    config = TrainConfig.from_dict(load_config_file(root / "train-config.json"))     # stage 1 (v1)
    old_form = {**load_config_file(root / "train-config.json"), "model": {"x_logvar": -4.0, "kl_warmup_steps": 1500}}
    old_form.pop("objective")
    assert TrainConfig.from_dict(old_form) == config
    assert config.objective["kl_warmup_steps"] == 1500 and config.objective["adv_weight"] == 0.0
    assert config.model["frame_coder"] == "conv64"
    last = TrainConfig.from_dict(load_config_file(root / "train-config-4-kl-z.json"))
    assert last.objective["kl_z_weight"] == 6.0 and last.model["conv_film"] and last.model["x_logvar"] == -5.5


def test_shipped_frame_judge_and_paper_table():
    """models/sprites ships the paper's frame judge and its 15 numbers, within the issue's bound."""
    from pathlib import Path
    root = Path(__file__).resolve().parents[1] / "models" / "sprites"
    judge = load_judge(root / "frame-judge", kind="frame")
    assert [p.shape for p in judge.predict_proba(torch.rand(1, 2, 12288))] == [(1, 2, 6)] * 4 + [(1, 2, 9)]
    shipped = json.loads((root / "eval.json").read_text())
    assert PAPER_KEYS <= set(shipped) and shipped["n_test_frames"] == 2664 * 8
    assert all(shipped[f"disagreement_{a}"] <= 0.10 for a in ("skin", "pants", "tops", "hair"))
    assert all(shipped["floors_met"].values())


def test_video_options_fine_tune_from_a_run_without_them(run, cache, tmp_path):
    from training.checkpoints import load_initial_weights
    from training.config import TrainingError
    plain, _ = load_model(run)
    options = dict(plain.config.to_dict(), conv_film=True, conv_norm_encodings=True)
    model = DSAE(DSAEConfig(**options))
    load_initial_weights(model, str(run), "cpu")
    assert torch.equal(model.frame_decoder.inp.weight, plain.frame_decoder.inp.weight)
    plain.eval(), model.eval()
    f, z = torch.randn(2, plain.config.f_dim), torch.randn(2, 5, plain.config.z_dim)
    with torch.no_grad():
        # the modulations start at zero: the decoder draws what the run's decoder drew, until trained
        assert torch.equal(model.decode(f, z), plain.decode(f, z))
        h = model.encode_frames(torch.rand(3, 4, 12288))
    assert h.shape == (3, 4, plain.config.frame_hidden) and float(h.abs().max()) < 1
    # and the modulations learn: a training step moves them
    model.train()
    loss, _ = model(torch.rand(2, 8, 12288))
    loss.backward()
    assert all(float(lin.weight.grad.abs().sum()) > 0 for lin in model.frame_decoder.film)
    # the exported graphs carry both options and match PyTorch
    from training.sprites.export import export_video
    assert export_video(model, str(cache), tmp_path / "model", "t", 1e-4)[1] < 1e-4
    # any other mismatch is still refused
    with pytest.raises(TrainingError, match="does not fit"):
        load_initial_weights(DSAE(DSAEConfig(**dict(options, conv_width=8))), str(run), "cpu")
