"""vc-train: a tiny run lowers the loss, logs and checkpoints; exact resumption; NaN stop; torchrun (gloo)."""
import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from training.cli import train as train_cli
from training.dataset import CacheError, SegmentDataset, write_synthetic_cache
from training.train import (TrainConfig, TrainingError, latest_checkpoint, load_config_file, load_model,
                            train)

ROOT = Path(__file__).resolve().parents[1]
TINY_MODEL = {"f_dim": 8, "z_dim": 4, "hidden_dim": 24, "frame_hidden": 32, "adv_hidden": 16}
TINY_OBJECTIVE = {"kl_warmup_steps": 10}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return write_synthetic_cache(tmp_path_factory.mktemp("cache") / "features", n_speakers=4,
                                 utterances_per_speaker=4, frames_per_utterance=100)


def tiny_config(cache, out, **changes):
    values = dict(features=str(cache), out=str(out), epochs=3, batch_size=16, lr=3e-3, progress=False,
                  checkpoint_every=4, threads=1, model=dict(TINY_MODEL), objective=dict(TINY_OBJECTIVE))
    values.update(changes)
    return TrainConfig.from_dict(values)


def test_dataset_normalises_and_pairs_same_speaker_segments(cache):
    data = SegmentDataset(cache, "train")
    assert len(data) == 4 * 4 * 9 and len(data.speakers) == 4
    x = data.batch(np.arange(len(data)))
    assert x.shape == (len(data), 20, 200) and x.dtype == np.float32
    assert abs(float(x.mean())) < 0.2 and 0.7 < float(x.std()) < 1.3       # normalised by the train stats
    assert torch.equal(data[5], torch.from_numpy(x[5]))
    idx = np.arange(len(data))
    partners = data.partners(idx, np.random.default_rng(0))
    assert np.array_equal(data.segment_speaker[partners], data.segment_speaker[idx])
    assert np.all(data.segment_utterance[partners] != data.segment_utterance[idx])
    grouped = data.grouped_order(np.random.default_rng(0), 4).reshape(-1, 4)
    assert len(grouped) == len(data) // 4 and len(np.unique(grouped)) == grouped.size
    assert np.all(data.segment_speaker[grouped] == data.segment_speaker[grouped[:, :1]])
    assert len(np.unique(data.segment_speaker[grouped[:8, 0]])) > 1          # groups are shuffled
    with pytest.raises(CacheError, match="segments.npy"):
        bad = cache.parent / "bad"
        write_synthetic_cache(bad, n_speakers=2, utterances_per_speaker=1, frames_per_utterance=40)
        np.save(bad / "train" / "segments.npy", np.array([[0, 30]], dtype=np.int64))
        SegmentDataset(bad, "train")


def test_tiny_run_lowers_the_loss_and_writes_logs_and_checkpoints(cache, tmp_path):
    out = tmp_path / "run"
    rc = train_cli.main(["--features", str(cache), "--out", str(out), "--epochs", "6", "--batch-size", "16",
                         "--lr", "3e-3", "--threads", "1", "--no-progress", "--f-dim", "8", "--z-dim", "4",
                         "--hidden-dim", "24", "--config", str(_config_file(tmp_path))])
    assert rc == 0
    stored = json.loads((out / "config.json").read_text())
    assert stored["epochs"] == 6 and stored["model"]["f_dim"] == 8 and stored["model"]["frame_hidden"] == 32
    assert stored["model"]["variant"] == "full"
    with open(out / "log.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 6
    for key in ("train_recon", "train_kl_f", "train_kl_z", "train_adv_ce", "val_elbo", "val_recon"):
        assert key in rows[0]
    first, last = rows[0], rows[-1]
    # the recon term dominates: it must fall clearly, and the paper's dev ELBO must rise
    assert float(last["train_recon"]) < float(first["train_recon"]) - 200
    assert float(last["val_elbo"]) > float(first["val_elbo"]) + 200
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ckpt = latest_checkpoint(out)
    assert {"model.safetensors", "optimizer.pt", "state.json"} <= {p.name for p in ckpt.iterdir()}
    assert len(list((out / "checkpoints").glob("step-*"))) <= 2
    model, state = load_model(out)
    assert state["epoch"] == 6 and state["global_step"] == 6 * 9

    # the same --out again without --resume is refused, not overwritten
    rc = train_cli.main(["--features", str(cache), "--out", str(out), "--no-progress"])
    assert rc == 1 and latest_checkpoint(out) == ckpt


def _config_file(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text('checkpoint_every = 4\n[model]\nframe_hidden = 32\nadv_hidden = 16\n'
                    '[objective]\nkl_warmup_steps = 10\n')
    return path


@pytest.mark.parametrize("variant,group", [("full", 1), ("factorised", 4)])
def test_a_run_killed_mid_epoch_resumes_to_the_same_weights(cache, tmp_path, variant, group):
    model, objective = dict(TINY_MODEL, variant=variant), dict(TINY_OBJECTIVE, adv_group_size=group)
    whole = tiny_config(cache, tmp_path / "whole", model=model, objective=objective)
    train(whole)
    broken = tiny_config(cache, tmp_path / "broken", model=model, objective=objective)
    # 9 steps per epoch, checkpoints every 4 steps: dying after step 15 loses steps 13-15 (mid epoch 2)
    train(broken, stop_after_steps=15)
    assert latest_checkpoint(tmp_path / "broken").name == "step-000000012"
    train(broken, resume=True)
    a = load_file(latest_checkpoint(tmp_path / "whole") / "model.safetensors")
    b = load_file(latest_checkpoint(tmp_path / "broken") / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6)
    log_a = (tmp_path / "whole" / "log.csv").read_text().splitlines()
    log_b = (tmp_path / "broken" / "log.csv").read_text().splitlines()
    assert [r.rsplit(",", 1)[0] for r in log_a] == [r.rsplit(",", 1)[0] for r in log_b]   # all but time_s


def test_a_run_paused_at_a_step_keeps_that_checkpoint_and_resumes_to_the_same_weights(cache, tmp_path):
    """--stop-at-step: the checkpoint of a step between the periodic ones (6; they fall on 4, 8, 12 and the
    epoch ends on 9, 18, 27), written at the whole run's learning rate, then the rest of the run as if never
    paused. A step the run has passed is refused."""
    train(tiny_config(cache, tmp_path / "whole"))
    paused = tiny_config(cache, tmp_path / "paused")
    assert train_cli.main(["--features", str(cache), "--out", str(tmp_path / "paused"), "--epochs", "3",
                           "--batch-size", "16", "--lr", "3e-3", "--checkpoint-every", "4", "--threads", "1",
                           "--config", str(_write_tiny_config_file(tmp_path)), "--no-progress",
                           "--stop-at-step", "6"]) == 0
    assert latest_checkpoint(tmp_path / "paused").name == "step-000000006"
    state = json.loads((latest_checkpoint(tmp_path / "paused") / "state.json").read_text())
    assert state["global_step"] == 6 and state["epoch"] == 0 and state["step_in_epoch"] == 6
    with pytest.raises(TrainingError, match="past the step to stop at"):
        train(paused, resume=True, stop_at_step=5)
    train(paused, resume=True, stop_at_step=18)             # an epoch's end: its own checkpoint, with dev ELBO
    assert latest_checkpoint(tmp_path / "paused").name == "step-000000018"
    assert len((tmp_path / "paused" / "log.csv").read_text().splitlines()) == 1 + 2
    train(paused, resume=True)
    a = load_file(latest_checkpoint(tmp_path / "whole") / "model.safetensors")
    b = load_file(latest_checkpoint(tmp_path / "paused") / "model.safetensors")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6)


def _write_tiny_config_file(tmp_path):
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps({"model": TINY_MODEL, "objective": TINY_OBJECTIVE}))
    return path


def _to_old_format(run_dir):
    """Rewrite a run directory as the trainer wrote it before the objective left the model config."""
    config = json.loads((run_dir / "config.json").read_text())
    config["model"].update(config.pop("objective"))
    (run_dir / "config.json").write_text(json.dumps(config))
    for state_path in (run_dir / "checkpoints").glob("step-*/state.json"):
        state = json.loads(state_path.read_text())
        state["model_config"].update(config["model"])        # the old state listed every loss weight
        state_path.write_text(json.dumps(state))


def test_an_old_format_run_directory_resumes_to_the_same_weights(cache, tmp_path):
    objective = dict(TINY_OBJECTIVE, adv_weight=0.0, z_invariance_weight=1.0)   # no adversary head
    train(tiny_config(cache, tmp_path / "whole", objective=objective, partner_max_gain=0.5))
    broken = tiny_config(cache, tmp_path / "broken", objective=objective, partner_max_gain=0.5)
    train(broken, stop_after_steps=15)
    _to_old_format(tmp_path / "broken")
    assert "adv_weight" in json.loads((tmp_path / "broken" / "config.json").read_text())["model"]
    assert train_cli.main(["--out", str(tmp_path / "broken"), "--resume", "--no-progress"]) == 0
    a = load_file(latest_checkpoint(tmp_path / "whole") / "model.safetensors")
    b = load_file(latest_checkpoint(tmp_path / "broken") / "model.safetensors")
    assert a.keys() == b.keys() and not any(k.startswith("speaker_adversary") for k in a)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "models" / "default").glob("train-config*.json")))
def test_the_shipped_stage_configs_load(name):
    """The training config shipped beside the default model loads, and describes the model it sits beside."""
    from vc.model import load_model as load_onnx

    values = load_config_file(ROOT / "models" / "default" / name)
    config = TrainConfig.from_dict(values)
    assert set(config.model) <= {"f_dim", "z_dim", "hidden_dim", "frame_hidden", "variant", "x_logvar", "adv_hidden"}
    shipped = load_onnx(ROOT / "models" / "default", device="cpu", threads=1)
    assert {k: config.model[k] for k in ("f_dim", "z_dim", "hidden_dim", "variant")} == {
        "f_dim": shipped.f_dim, "z_dim": shipped.z_dim, "hidden_dim": shipped.metadata["hidden_dim"],
        "variant": shipped.variant}


def test_resume_through_the_cli_can_extend_but_not_change_a_run(cache, tmp_path):
    out = tmp_path / "run"
    train(tiny_config(cache, out, epochs=1))
    assert train_cli.main(["--out", str(out), "--resume", "--lr", "1.0"]) == 1
    assert train_cli.main(["--out", str(out), "--resume", "--epochs", "2", "--no-progress"]) == 0
    assert load_model(out)[1]["epoch"] == 2


def test_non_finite_loss_stops_with_a_clear_message_and_keeps_the_last_checkpoint(cache, tmp_path, monkeypatch):
    out = tmp_path / "run"
    calls = {"n": 0}
    real_batch = SegmentDataset.batch

    def poisoned(self, indices):
        calls["n"] += 1
        x = real_batch(self, indices)
        if calls["n"] > 12:         # after a few good steps (and one checkpoint), the data turns bad
            x[:] = np.nan
        return x

    monkeypatch.setattr(SegmentDataset, "batch", poisoned)
    config = tiny_config(cache, out, objective=dict(TINY_OBJECTIVE, f_swap_prob=0.0))
    stopped = r"loss became nan at epoch 2, step 3 \(global step 12\).*step-000000009.* is intact"
    with pytest.raises(TrainingError, match=stopped):
        train(config)
    model, state = load_model(out)
    assert state["global_step"] == 9
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_cli_reports_a_missing_cache_in_one_line(tmp_path, capsys):
    rc = train_cli.main(["--features", str(tmp_path / "nowhere"), "--out", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and err.startswith("vc-train: ") and "manifest.json" in err and len(err.splitlines()) == 1


def test_torchrun_with_two_gloo_processes(cache, tmp_path):
    out = tmp_path / "ddp"
    config = tmp_path / "ddp.json"
    config.write_text(json.dumps({"model": TINY_MODEL, "objective": TINY_OBJECTIVE, "checkpoint_every": 100}))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "training.cli.train", "--features", str(cache), "--out", str(out), "--config", str(config),
           "--epochs", "2", "--batch-size", "16", "--device", "cpu", "--threads", "1", "--no-progress"]
    # A session of its own, so that a hang takes its workers down with it (torchrun's agent alone would not).
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        _, stderr = proc.communicate(timeout=150)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail("torchrun with 2 processes did not finish in 150 s")
    assert proc.returncode == 0, stderr[-3000:]
    _, state = load_model(out)
    # 144 segments split over 2 ranks: 72 each, 4 steps of 16 per epoch
    assert state["world_size"] == 2 and state["global_step"] == 2 * 4
    assert len(state["history"]) == 2 and "val_elbo" in state["history"][-1]


def test_voice_perturbation_warps_tilts_and_keeps_the_normalisation():
    from training.augment import VoicePerturbation

    D = 200
    mean, std = np.linspace(-3, -1, D).astype(np.float32), np.linspace(1, 2, D).astype(np.float32)
    log_mag = torch.full((64, 5, D), -6.0)
    log_mag[:, :, 49] = 0.0                                  # one peak at FFT bin 50 (DC dropped)
    x = (log_mag - torch.from_numpy(mean)) / torch.from_numpy(std)
    torch.manual_seed(0)
    same = VoicePerturbation(mean, std, max_warp=1.0, max_tilt=0.0, max_gain=0.0)(x)
    torch.testing.assert_close(same, x)

    torch.manual_seed(0)
    warped = VoicePerturbation(mean, std, max_warp=1.25, max_tilt=0.0, max_gain=0.0)(x)
    peak_bin = (warped * torch.from_numpy(std) + torch.from_numpy(mean)).argmax(-1) + 1    # (64, 5)
    assert torch.all(peak_bin == peak_bin[:, :1])            # one warp per segment, for every frame
    assert 40 <= int(peak_bin.min()) < 48 and 52 < int(peak_bin.max()) <= 63   # 50 / 1.25 .. 50 * 1.25
    assert len(torch.unique(peak_bin)) > 8

    torch.manual_seed(1)
    tilted = VoicePerturbation(mean, std, max_warp=1.0, max_tilt=2.0, max_gain=0.0)(x)
    change = (tilted - x) * torch.from_numpy(std)           # in nats of log magnitude
    slope = change[:, 0, -1] - change[:, 0, 0]
    assert float(slope.abs().max()) <= 2.0 + 1e-4 and float(slope.abs().max()) > 1.0
    torch.testing.assert_close(change[:, 0, 0] + change[:, 0, -1], torch.zeros(64), atol=1e-4, rtol=0)


def test_pitch_shift_moves_the_harmonics_and_keeps_the_envelope():
    from training.augment import VoicePerturbation

    D = 200
    k = np.arange(1, D + 1)
    envelope = 4.0 * np.exp(-((k - 60) / 12.0) ** 2) - 0.01 * k           # one formant at bin 60
    harmonics = np.where(np.abs((k / 3.0 + 0.5) % 1.0 - 0.5) < 0.17, 0.0, -3.0)   # F0 = 3 bins = 120 Hz
    x = torch.tensor(envelope + harmonics, dtype=torch.float32).view(1, 1, D).repeat(32, 2, 1)
    shift = VoicePerturbation(np.zeros(D), np.ones(D), max_pitch=1.5, max_warp=1.0, max_tilt=0.0, max_gain=0.0)
    torch.manual_seed(0)
    y = shift(x)

    def spacing(frame):       # median distance between local maxima, in bins
        v = frame.numpy()
        peaks = np.where((v[1:-1] > v[:-2]) & (v[1:-1] >= v[2:]))[0]
        return float(np.median(np.diff(peaks)))

    spacings = [spacing(y[b, 0]) for b in range(32)]
    assert min(spacings) <= 2.5 and max(spacings) >= 4.0           # 3 / 1.5 .. 3 * 1.5
    # the formant stays where it was; a formant shift (the envelope warp) moves it
    assert int((shift.envelope(y)[:, 0].argmax(-1) - 59).abs().max()) <= 2
    torch.manual_seed(0)
    formant = VoicePerturbation(np.zeros(D), np.ones(D), max_pitch=1.0, max_warp=1.2, max_tilt=0.0, max_gain=0.0)
    assert int((shift.envelope(formant(x))[:, 0].argmax(-1) - 59).abs().max()) >= 6


def test_invariance_term_is_in_the_loss_and_fine_tuning_starts_from_the_given_weights(cache, tmp_path):
    base = tmp_path / "base"
    train(tiny_config(cache, base, epochs=1))
    # at a negligible learning rate a fine-tuning run ends where it started: on the base weights
    still = tmp_path / "still"
    rc = train_cli.main(["--features", str(cache), "--out", str(still), "--epochs", "1", "--batch-size", "16",
                         "--lr", "1e-12", "--threads", "1", "--no-progress", "--f-dim", "8", "--z-dim", "4",
                         "--hidden-dim", "24", "--config", str(_config_file(tmp_path)), "--init-from", str(base)])
    assert rc == 0
    a = load_file(latest_checkpoint(base) / "model.safetensors")
    b = load_file(latest_checkpoint(still) / "model.safetensors")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6)

    objective = dict(TINY_OBJECTIVE, kl_warmup_steps=0, z_invariance_weight=2.0)
    train(tiny_config(cache, tmp_path / "inv", epochs=1, init_from=str(latest_checkpoint(base)), objective=objective))
    with open(tmp_path / "inv" / "log.csv") as fh:
        row = {k: float(v) for k, v in next(csv.DictReader(fh)).items()}
    assert row["train_z_inv"] > 0
    # the loss is spelled out term by term: ELBO terms + adversary + invariance
    parts = row["train_recon"] + row["train_kl_f"] + row["train_kl_z"] + 30.0 * row["train_adv_ce"]
    assert row["train_loss"] == pytest.approx(parts + 2.0 * row["train_z_inv"], rel=1e-4)

    wider = tiny_config(cache, tmp_path / "wider", epochs=1, init_from=str(base), model=dict(TINY_MODEL, hidden_dim=32))
    with pytest.raises(TrainingError, match="does not fit this model"):
        train(wider)
    assert not (tmp_path / "wider" / "config.json").exists()       # nothing written that would block a retry
    with pytest.raises(TrainingError, match="no model.safetensors"):
        train(tiny_config(cache, tmp_path / "nothing", init_from=str(tmp_path / "missing")))


def _with_content_targets(cache, tmp_path, dim=6):
    """A copy of the cache whose content targets are a few normalised bins of each frame."""
    import shutil
    copy = tmp_path / "with-content"
    shutil.copytree(cache, copy)
    for split in ("train", "dev"):
        frames = np.load(copy / split / "frames.npy")
        picked = frames[:, :: frames.shape[1] // dim][:, :dim]
        np.save(copy / split / "content.npy",
                ((picked - picked.mean(0)) / picked.std(0)).astype(np.float16))
    return copy


def test_content_term_is_in_the_loss_and_falls(cache, tmp_path):
    objective = dict(TINY_OBJECTIVE, content_weight=3.0)
    with pytest.raises(TrainingError, match="needs content targets"):
        train(tiny_config(cache, tmp_path / "none", objective=objective))
    assert not (tmp_path / "none" / "config.json").exists()

    features = _with_content_targets(cache, tmp_path)
    out = tmp_path / "content"
    train(tiny_config(features, out, epochs=4, objective=objective))
    with open(out / "log.csv") as fh:
        rows = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(fh)]
    # predicting the targets' mean costs dim / 2 = 3 per frame, 60 per 20-frame segment
    assert rows[0]["train_content"] > 0
    assert rows[-1]["train_content"] < 0.85 * rows[0]["train_content"]
    first = rows[0]
    parts = first["train_recon"] + first["train_kl_f"] + first["train_kl_z"] + 30.0 * first["train_adv_ce"]
    assert first["train_loss"] == pytest.approx(parts + 3.0 * first["train_content"], rel=1e-3)
    model, _ = load_model(out)
    assert model.config.content_dim == 6 and model.content_head is not None


def _phone_judge_run(run_dir, n_features):
    """A (random) phone recogniser's run directory, as `python -m training.phones train` leaves it."""
    import json

    from training.phones import PhoneConfig, PhoneNet

    run_dir.mkdir()
    cfg = PhoneConfig(n_features=n_features, channels=16, embedding=8)
    torch.manual_seed(1)
    torch.save({"model": PhoneNet(cfg).state_dict(), "config": json.dumps(cfg.__dict__)}, run_dir / "checkpoint.pt")
    return run_dir


def test_phone_keep_term_is_in_the_loss_and_falls(cache, tmp_path):
    """The phones a frozen recogniser hears in a segment decoded with another segment's f must be those of
    the segment itself: the term is logged, weighted into the loss, and training lowers it."""
    from training.config import Objective

    with pytest.raises(ValueError, match="phone_keep_strengths"):
        Objective.from_dict({"phone_keep_strengths": [2.0, 1.0]})
    objective = dict(TINY_OBJECTIVE, phone_keep_weight=3000.0, phone_keep_strengths=[0.0, 2.0])
    with pytest.raises(TrainingError, match="needs phone_judge"):
        train(tiny_config(cache, tmp_path / "none", objective=objective))
    with pytest.raises(TrainingError, match="no phone recogniser checkpoint"):
        train(tiny_config(cache, tmp_path / "missing", objective=objective, phone_judge=str(tmp_path / "nowhere")))
    assert not (tmp_path / "none" / "config.json").exists()      # nothing written that would block a retry
    assert not (tmp_path / "missing" / "config.json").exists()

    n_features = SegmentDataset(cache, "train").feature_dim
    judge = _phone_judge_run(tmp_path / "judge", n_features)
    before = {k: v.clone() for k, v in torch.load(judge / "checkpoint.pt", weights_only=True)["model"].items()}
    out = tmp_path / "kept"
    train(tiny_config(cache, out, epochs=6, objective=objective, phone_judge=str(judge)))
    with open(out / "log.csv") as fh:
        rows = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(fh)]
    first = rows[0]
    assert first["train_phones_lost"] > 0
    parts = first["train_recon"] + first["train_kl_f"] + first["train_kl_z"] + 30.0 * first["train_adv_ce"]
    assert first["train_loss"] == pytest.approx(parts + 3000.0 * first["train_phones_lost"], rel=1e-3)
    assert rows[-1]["train_phones_lost"] < 0.8 * first["train_phones_lost"]
    after = torch.load(judge / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(before[k], after[k]) for k in before)          # the judge is never trained
    model, _ = load_model(out)
    assert not any("judge" in name for name in model.state_dict())          # nor saved with the model


def _voice_missed_on_dev(model, cache) -> float:
    data = SegmentDataset(cache, "dev")
    x = torch.from_numpy(data.batch(list(range(min(len(data), 32)))))
    model.eval()
    with torch.no_grad():
        h = model.encode_frames(x)
        f_mean, _ = model.posterior_f(h)
        return float(model._voice_missed(model.posterior_z(h, f_mean)[0], f_mean))


def test_voice_reach_term_is_in_the_loss_reaches_the_voice_and_never_trains_the_f_encoder(cache, tmp_path):
    """A segment's z decoded with another segment's f, encoded again, must give back that f: the term is
    logged, weighted into the loss, and a run trained with it reaches the voice far better than one without;
    its gradient reaches the decoder and z but never the f encoder's own weights (else the encoder could learn to read f off whatever is decoded)."""
    from training.config import Objective
    from training.dsae import DSAE, DSAEConfig

    with pytest.raises(ValueError, match="voice_reach_weight"):
        Objective.from_dict({"voice_reach_weight": -1.0})
    torch.manual_seed(0)
    model = DSAE(DSAEConfig(feature_dim=12, f_dim=4, z_dim=3, hidden_dim=8, frame_hidden=8))
    x = torch.randn(4, 10, 12)
    f_mean, _ = model.posterior_f(model.encode_frames(x))
    z = model.posterior_z(model.encode_frames(x), f_mean)[0].detach().requires_grad_(True)
    f_encoder = [*model.frame_encoder.parameters(), *model.f_lstm.parameters(), *model.f_out.parameters()]
    decoder = list(model.frame_decoder.parameters())
    grads = torch.autograd.grad(model._voice_missed(z, f_mean), [z, *decoder, *f_encoder], allow_unused=True)
    assert grads[0].abs().sum() > 0
    assert all(g is not None and g.abs().sum() > 0 for g in grads[1:1 + len(decoder)])
    assert all(g is None for g in grads[1 + len(decoder):])
    assert all(p.requires_grad for p in model.parameters())                # the weights are free again

    # f spreads out as the ELBO trains, so the distance is compared with a run without the term.
    missed = {}
    for weight in (0.0, 500.0):
        out = tmp_path / f"reach{weight:g}"
        train(tiny_config(cache, out, epochs=6, objective=dict(TINY_OBJECTIVE, voice_reach_weight=weight)))
        trained, _ = load_model(out)
        with open(out / "log.csv") as fh:
            first = next(csv.DictReader(fh))
        if weight:
            parts = (float(first["train_recon"]) + float(first["train_kl_f"]) + float(first["train_kl_z"])
                     + 30.0 * float(first["train_adv_ce"]))
            assert float(first["train_loss"]) == pytest.approx(parts + weight * float(first["train_voice_missed"]),
                                                                rel=1e-3)
        missed[weight] = _voice_missed_on_dev(trained, cache)
    assert missed[500.0] < 0.5 * missed[0.0]


def test_fine_tuning_starts_from_a_model_directory_and_fits_what_it_lacks_first(cache, tmp_path):
    """init_from a vc-export model directory: its graphs' weights read back exactly (renormalised for a cache
    with other statistics), what it never held (x's variance, the prior, the heads) listed and trained alone
    first by train_only, the rest held fixed."""
    from training.checkpoints import NOT_EXPORTED, load_initial_weights
    from training.dsae import DSAE
    from training.export import export
    from training.model_dir import weights_from_model_dir

    base = tmp_path / "base"
    train(tiny_config(cache, base, epochs=1))
    model_dir = tmp_path / "model"
    export(base, model_dir, log=lambda *a: None)
    trained, _ = load_model(base)
    weights = weights_from_model_dir(model_dir)
    own = trained.state_dict()
    assert sorted(k for k in own if k not in weights) == sorted(k for k in own if k.startswith(NOT_EXPORTED))
    assert any(k.startswith("prior_lstm.") for k in own if k not in weights)
    for key, value in weights.items():
        torch.testing.assert_close(value, own[key], rtol=0, atol=0)

    # the same function on a cache normalised otherwise: raw = x * std + mean
    data = SegmentDataset(cache, "train")
    x_raw = data.batch(np.arange(8)) * data.std + data.mean
    mean, std = data.mean + 0.3, data.std * 1.7
    moved = DSAE(trained.config)
    fresh = load_initial_weights(moved, str(model_dir), "cpu", norm=(mean, std))
    assert set(fresh) == {k for k in own if k.startswith(NOT_EXPORTED)}
    with torch.no_grad():
        ref = trained.encode(torch.from_numpy(((x_raw - data.mean) / data.std).astype(np.float32)))
        got = moved.encode(torch.from_numpy(((x_raw - mean) / std).astype(np.float32)))
        torch.testing.assert_close(got[0], ref[0], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(got[2], ref[2], rtol=1e-4, atol=1e-4)
        out_ref = trained.decode(ref[0], ref[2]).numpy() * data.std + data.mean
        out_got = moved.decode(got[0], got[2]).numpy() * std + mean
    np.testing.assert_allclose(out_got, out_ref, rtol=1e-4, atol=1e-3)

    settle = tmp_path / "settle"
    train(tiny_config(cache, settle, epochs=1, init_from=str(model_dir),
                      train_only=["x_logvar", "prior_", "speaker_adversary"]))
    after = load_file(latest_checkpoint(settle) / "model.safetensors")
    for key, value in weights.items():          # held fixed, bit for bit
        torch.testing.assert_close(after[key], value, rtol=0, atol=0)
    for key in ("x_logvar", "prior_out.weight"):      # fitted
        assert not torch.equal(after[key], DSAE(trained.config).state_dict()[key])

    with pytest.raises(TrainingError, match="train_only: no parameter .* 'decoder'"):
        train(tiny_config(cache, tmp_path / "typo", epochs=1, init_from=str(model_dir), train_only=["decoder"]))
    with pytest.raises(TrainingError, match="does not fit this model.*hidden_dim 24"):
        train(tiny_config(cache, tmp_path / "wider", epochs=1, init_from=str(model_dir),
                          model=dict(TINY_MODEL, hidden_dim=32)))


def test_voice_judge_term_is_in_the_loss_and_makes_conversions_heard_as_their_target(cache, tmp_path):
    """A separately trained, frozen speaker recogniser must hear a segment decoded with another segment's f as
    that other segment's speaker: the term is logged and weighted into the loss, lower after training with it
    than without, and the judge is neither trained nor saved with the model."""
    from training import speaker_judge

    objective = dict(TINY_OBJECTIVE, voice_judge_weight=50.0)
    with pytest.raises(TrainingError, match="needs speaker_judge"):
        train(tiny_config(cache, tmp_path / "none", objective=objective))
    with pytest.raises(TrainingError, match="no speaker recogniser checkpoint"):
        train(tiny_config(cache, tmp_path / "missing", objective=objective, speaker_judge=str(tmp_path / "nowhere")))
    assert not (tmp_path / "none" / "config.json").exists()

    judge = tmp_path / "judge"
    assert speaker_judge.main(["train", "--features", str(cache), "--out", str(judge), "--epochs", "3",
                               "--batch-size", "16"]) == 0
    history = json.loads(torch.load(judge / "checkpoint.pt", weights_only=True)["history"])
    assert history[-1]["held_out_accuracy"] > 0.9           # four synthetic voices, utterances it never saw
    other = write_synthetic_cache(tmp_path / "other", n_speakers=3, utterances_per_speaker=4, frames_per_utterance=100)
    with pytest.raises(TrainingError, match="knows other speakers"):
        train(tiny_config(other, tmp_path / "wrong", objective=objective, speaker_judge=str(judge)))

    before = {k: v.clone() for k, v in torch.load(judge / "checkpoint.pt", weights_only=True)["model"].items()}
    unheard = {}
    for weight in (0.0, 50.0):
        out = tmp_path / f"judged{weight:g}"
        train(tiny_config(cache, out, epochs=6, speaker_judge=str(judge),
                          objective=dict(TINY_OBJECTIVE, voice_judge_weight=weight)))
        with open(out / "log.csv") as fh:
            rows = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(fh)]
        if weight:
            first = rows[0]
            parts = first["train_recon"] + first["train_kl_f"] + first["train_kl_z"] + 30.0 * first["train_adv_ce"]
            assert first["train_loss"] == pytest.approx(parts + weight * first["train_voice_unheard"], rel=1e-3)
        model, _ = load_model(out)
        assert not any("judge" in name for name in model.state_dict())
        net, _ = speaker_judge.load_run(judge)
        data = SegmentDataset(cache, "train")
        idx = np.arange(0, len(data), 3)[:48]
        x = torch.from_numpy(data.batch(idx))
        model.eval()
        with torch.no_grad():
            h = model.encode_frames(x)
            f_mean, _ = model.posterior_f(h)
            z = model.posterior_z(h, f_mean)[0]
            loss, _ = model._voice_unheard(z, f_mean, torch.from_numpy(data.segment_speaker[idx]),
                                           speaker_judge.SpeakerJudge(net, data.mean, data.std))
        unheard[weight] = float(loss)
    assert unheard[50.0] < unheard[0.0]
    after = torch.load(judge / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_an_envelope_judge_does_not_hear_the_harmonics():
    """With envelope_coeffs the speaker recogniser hears only what the runtime keeps of a decoded frame: a
    harmonic ripple across frequency (the fine structure that is rebuilt) barely moves its verdict."""
    from training.speaker_judge import SpeakerConfig, SpeakerNet

    torch.manual_seed(0)
    frames = torch.randn(3, 20, 200) * 0.3 - 4.0
    ripple = 0.8 * torch.cos(2 * torch.pi * torch.arange(200) / 2.5)        # harmonics of 100 Hz (2.5 bins apart)
    heard = {}
    for coeffs in (0, 48):
        net = SpeakerNet(SpeakerConfig(n_speakers=5, envelope_coeffs=coeffs)).eval()
        with torch.no_grad():
            heard[coeffs] = (net(frames), net(frames + ripple))
    moved = {coeffs: float((a - b).abs().max()) for coeffs, (a, b) in heard.items()}
    assert moved[0] > 0.01 and moved[48] < 0.25 * moved[0]     # the DCT lifter leaks a little at the edges


def test_the_learning_rate_warms_up_then_follows_its_schedule():
    from training.train import _learning_rate

    plain = TrainConfig.from_dict(dict(features="x", out="y", lr=1e-3, lr_final_fraction=0.1))
    warm = TrainConfig.from_dict(dict(features="x", out="y", lr=1e-3, lr_final_fraction=0.1, lr_warmup_steps=100))
    rates = [_learning_rate(warm, step, 1000) for step in range(1000)]
    assert rates[0] == pytest.approx(1e-5 * _learning_rate(plain, 0, 1000) / 1e-3)
    assert all(a < b for a, b in zip(rates[:99], rates[1:100]))                 # rising over the warm-up
    assert rates[99:] == [_learning_rate(plain, step, 1000) for step in range(99, 1000)]
    assert rates[-1] == pytest.approx(1e-4)
    with pytest.raises(ValueError, match="lr_warmup_steps"):
        TrainConfig.from_dict(dict(features="x", out="y", lr_warmup_steps=-1))
