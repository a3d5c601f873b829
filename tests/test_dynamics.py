"""The dynamics experiment: the bouncing-balls generator (training.data.balls), the deterministic transition
models beside the paper's stochastic prior (DSAEConfig.dynamics), vc-train --data balls with each, and
tools/eval_dynamics.py's measures (missing-frame prediction, fraction of incorrect pixels).

Everything runs on a small cache written here and tiny models, in a few seconds.
"""
import importlib.util
import json

import numpy as np
import pytest
import torch

from helpers import REPO
from training.balls.data import BALLS_MODEL, BallsDataset
from training.balls.predict import MISSING, evaluate_dynamics
from training.cli import train as train_cli
from training.config import Objective
from training.data import balls
from training.dsae import DSAE, DSAEConfig
from training.train import load_model

DYNAMICS = ("stochastic", "lstm_f", "lstm_c")
TINY = {"f_dim": 3, "z_dim": 4, "hidden_dim": 16, "frame_hidden": 16}
SMALL = balls.BallsSpec(n_train=16, n_test=6, seed=7)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return balls.write_cache(tmp_path_factory.mktemp("balls") / "cache", SMALL)


@pytest.fixture(scope="module")
def runs(cache, tmp_path_factory):
    """One tiny vc-train run (two steps) per dynamics."""
    root = tmp_path_factory.mktemp("runs")
    config = root / "c.json"
    config.write_text(json.dumps({"model": TINY, "objective": {"kl_warmup_steps": 0}}))
    out = {}
    for dynamics in DYNAMICS:
        out[dynamics] = root / dynamics
        assert train_cli.main(["--data", "balls", "--features", str(cache), "--out", str(out[dynamics]),
                               "--config", str(config), "--dynamics", dynamics, "--epochs", "1",
                               "--batch-size", "8", "--threads", "1", "--no-progress"]) == 0
    return out


def _tiny(dynamics: str, seed: int = 0) -> DSAE:
    torch.manual_seed(seed)
    return DSAE(DSAEConfig.from_dict({**BALLS_MODEL, **TINY, "dynamics": dynamics}))


def test_generator_is_deterministic_binary_and_keeps_the_ball_inside():
    frames, radii = balls.make_split(SMALL, "train")
    again, _ = balls.make_split(SMALL, "train")
    other, _ = balls.make_split(balls.BallsSpec(n_train=16, seed=8), "train")
    assert frames.shape == (16, 40, 32, 32) and frames.dtype == np.uint8
    assert np.array_equal(frames, again) and not np.array_equal(frames, other)
    assert set(np.unique(frames)) <= {0, 1}
    rng = np.random.default_rng(0)
    centres, r = balls.trajectories(200, length=60, radius=(2.5, 4.0), speed=(1.0, 2.0), rng=rng)
    assert (centres >= r[:, None, None] - 1e-9).all() and (centres <= 32 - r[:, None, None] + 1e-9).all()
    # a whole ball in every frame: its area is the same in every frame of a video, up to pixel rounding
    area = frames.reshape(16, 40, -1).sum(-1)
    assert (area > 0).all() and (area.max(1) - area.min(1) <= 0.3 * area.max(1)).all()
    # it moves at its speed (1 to 2 px per frame); a step folded back at a wall is only shorter
    steps = np.linalg.norm(np.diff(centres, axis=1), axis=-1)
    assert steps.max() <= 2.0 + 1e-9 and np.median(steps, axis=1).min() >= 1.0 - 1e-9


def test_cache_round_trips(cache):
    frames, radii = balls.load_split(cache, "test")
    expected, expected_radii = balls.make_split(SMALL, "test")
    assert np.array_equal(frames, expected) and np.allclose(radii, expected_radii)
    data = BallsDataset(cache, "train")
    assert data.batch([0, 3]).shape == (2, 40, 1024) and data.manifest["data"] == "balls"


@pytest.mark.parametrize("dynamics", DYNAMICS)
def test_each_dynamics_builds_and_trains(dynamics):
    model = _tiny(dynamics)
    x = torch.from_numpy(balls.make_split(SMALL, "test")[0].reshape(6, 40, -1).astype(np.float32))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for step in range(2):
        loss, terms = model(x, step=step, objective=Objective())
        assert torch.isfinite(loss) and set(terms) >= {"recon", "kl_f", "kl_z", "elbo", "loss"}
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert model.predict_missing(x[:, :30], 10).shape == (6, 40, 1024)
    gen = model.generate(2, 7)
    assert gen.shape == (2, 7, 1024) and 0 <= float(gen.min()) and float(gen.max()) <= 1
    names = set(model.state_dict())
    assert ("prior_lstm.weight_ih_l0" in names) == (dynamics == "stochastic")
    assert ("transition_init.weight" in names) == (dynamics == "lstm_f")


def test_old_configs_are_the_stochastic_gaussian_model():
    config = DSAEConfig.from_dict({"feature_dim": 200, "z_dim": 4})    # written before the options existed
    assert config.dynamics == "stochastic" and config.likelihood == "gaussian"
    names = set(DSAE(config).state_dict())
    assert "prior_out.weight" in names and not any(n.startswith("transition") for n in names)
    with pytest.raises(ValueError, match="dynamics"):
        DSAEConfig(dynamics="lstm")


def test_lstm_c_transition_ignores_f_and_lstm_f_uses_it():
    z = torch.randn(2, 5, 4)
    f1, f2 = torch.randn(2, 3), torch.randn(2, 3)
    c, f_model = _tiny("lstm_c"), _tiny("lstm_f")
    assert torch.equal(c.transition(z, f1)[0], c.transition(z, f2)[0])
    assert not torch.allclose(f_model.transition(z, f1)[0], f_model.transition(z, f2)[0])


@pytest.mark.parametrize("dynamics", DYNAMICS)
def test_vc_train_runs_round_trip_their_checkpoints(runs, cache, dynamics):
    model, state = load_model(runs[dynamics])
    assert model.config.dynamics == dynamics and model.config.likelihood == "bernoulli"
    assert state["global_step"] == 2 and np.isfinite(state["history"][-1]["train_loss"])
    config = json.loads((runs[dynamics] / "config.json").read_text())
    assert config["data"] == "balls" and config["model"]["dynamics"] == dynamics
    x = torch.from_numpy(BallsDataset(cache, "test").batch([0, 1]))
    assert np.isfinite(float(model.elbo_terms(x)["elbo"].mean()))


def test_evaluate_dynamics_on_untrained_models():
    frames = balls.make_split(SMALL, "test")[0].reshape(6, 40, -1)
    result = evaluate_dynamics({d: _tiny(d) for d in DYNAMICS}, frames, samples=2, batch_size=4)
    for key in ("incorrect_pixels", "incorrect_pixels_best_of"):
        assert set(result[key]) == set(DYNAMICS)
        for curve in result[key].values():
            assert set(curve) == set(MISSING) and all(0.0 <= v <= 1.0 for v in curve.values())
    assert all(0.0 <= result["reconstruction"][d] <= 1.0 for d in DYNAMICS)
    assert result["blank_frames"][5] == pytest.approx(frames[:, -5:].mean())


def test_eval_dynamics_tool_prints_the_contract(runs, cache, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("eval_dynamics", REPO / "tools" / "eval_dynamics.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    figure = tmp_path / "dyn.png"
    capsys.readouterr()
    assert tool.main(["--runs", *(str(runs[d]) for d in DYNAMICS), "--cache", str(cache), "--sequences", "3",
                      "--samples", "1", "--figure", str(figure), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result["incorrect_pixels"]) == set(DYNAMICS) and set(result["reconstruction"]) == set(DYNAMICS)
    assert all(set(curve) == {str(k) for k in MISSING} for curve in result["incorrect_pixels"].values())
    assert figure.stat().st_size > 1000
