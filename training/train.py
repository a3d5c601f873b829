"""Training loop for the DSAE: checkpoints, exact resumption, validation, logs, DistributedDataParallel.

A run directory holds:
    config.json                 the full configuration (TrainConfig, model options included)
    cache_manifest.json, cache_mean.npy, cache_std.npy
                                copies from the feature cache, so that export needs only the run
    checkpoints/step-NNNNNNNNN/ model.safetensors, optimizer.pt, state.json (counters, running sums,
                                history); each directory appears by one rename, so it is whole or absent
    checkpoints/latest          name of the newest complete checkpoint (replaced atomically)
    log.csv, loss.png           per-epoch training terms and validation ELBO

Exact resumption: the epoch's order and same-speaker partners come from a generator seeded by (seed, epoch)
and the reparameterisation noise from one seeded by (seed, rank, step), so the only state to keep is the
weights, the optimiser and the counters. A resumed run redoes the steps after the last checkpoint and ends
with the same weights as an uninterrupted one.

Fine-tuning (`init_from`): a new run starts from another run's weights, with a fresh optimiser and
schedule; the shipped model was made in such stages (models/default/README.md).

Several processes: launch the same command under `torchrun --nproc_per_node N`; each rank takes every
N-th segment of the epoch's order, gradients are averaged by DDP (gloo on CPU, nccl on GPU) and rank 0
writes checkpoints and logs.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import distributed as dist

from training.augment import VoicePerturbation, change_level
from training.dataset import CacheError, SegmentDataset, read_manifest
from training.dsae import DSAE, DSAEConfig, reject_unknown_options
from vc.files import atomic_write, save_figure

CONFIG_NAME = "config.json"
CHECKPOINTS = "checkpoints"
WEIGHTS_NAME = "model.safetensors"

# Defaults for speech: the paper's full model plus same-speaker f swapping (f then carries the speaker:
# f EER 0-0.4 % where MFCC-mean gives 8.5 %) and a reversed-gradient speaker adversary on mean_t z (weight
# 30 was the best of 1, 30, 100: z EER 13 %, 21 %, 18 %). Measurements: see the docstring of training.dsae.
DEFAULT_MODEL = dict(
    f_dim=64, z_dim=32, hidden_dim=256, frame_hidden=256, variant="full",
    kl_warmup_steps=2000, free_bits_z=0.0, f_swap_prob=1.0, adv_weight=30.0, adv_group_size=1,
)

VOICE_CHANGE = dict(max_pitch=1.5, max_warp=1.2, max_tilt=1.0, max_gain=1.0)


class TrainingError(RuntimeError):
    """A clear, one-line reason why training cannot start or had to stop."""


@dataclass
class TrainConfig:
    features: str = ""
    out: str = ""
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    lr_schedule: str = "cosine"       # cosine: decay to lr_final_fraction * lr at the last step
    lr_final_fraction: float = 0.1
    grad_clip: float = 5.0
    seed: int = 0
    device: str = "auto"              # auto | cpu | cuda
    threads: int = 2                  # torch threads per process on CPU
    checkpoint_every: int = 500       # steps; a checkpoint also ends every epoch
    keep_checkpoints: int = 2
    val_max_segments: int = 4096
    progress: bool = True
    # Start from the weights of another run or checkpoint (fine-tuning; the optimiser starts afresh).
    init_from: str = ""
    # Random voice changes for the z invariance term (training.augment.VoicePerturbation arguments).
    voice_change: dict = field(default_factory=lambda: dict(VOICE_CHANGE))
    # Random level change (nats, uniform +-) of the partner segments that q(f) sees: f learns that
    # loudness and microphone gain do not say who speaks.
    partner_max_gain: float = 0.0
    model: dict = field(default_factory=lambda: dict(DEFAULT_MODEL))

    def __post_init__(self):
        self.model = {**DEFAULT_MODEL, **(self.model or {})}
        self.voice_change = {**VOICE_CHANGE, **(self.voice_change or {})}
        reject_unknown_options(self.voice_change, VOICE_CHANGE, "voice_change")
        if self.lr_schedule not in ("cosine", "constant"):
            raise ValueError(f"lr_schedule must be cosine or constant, not {self.lr_schedule!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be auto, cpu or cuda, not {self.device!r}")
        for name in ("epochs", "batch_size", "checkpoint_every", "keep_checkpoints", "threads"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, not {self.lr}")
        DSAEConfig.from_dict(self.model)   # validates the model options early

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        reject_unknown_options(d, {f.name for f in dataclasses.fields(cls)}, "training")
        return cls(**d)


# ----------------------------------------------------------------------------- processes and devices

@dataclass
class _Processes:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0


def _setup_processes(config: TrainConfig) -> _Processes:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    want_cuda = config.device == "cuda" or (config.device == "auto" and torch.cuda.is_available())
    if config.device == "cuda" and not torch.cuda.is_available():
        raise TrainingError("--device cuda: no CUDA device is available to PyTorch")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if want_cuda:
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
        torch.set_num_threads(config.threads)
        # Denormal floats in the LSTMs made CPU steps up to 5x slower in measurements; flushing them to
        # zero changes nothing a float32 model can resolve.
        torch.set_flush_denormal(True)
    procs = _Processes(device=device, local_rank=local_rank)
    if world > 1:
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if want_cuda else "gloo")
        procs.rank, procs.world = dist.get_rank(), dist.get_world_size()
    return procs


# ----------------------------------------------------------------------------- files

def _atomic_write_text(path: Path, text: str):
    with atomic_write(path, "w", encoding="utf-8") as fh:
        fh.write(text)


def load_config_file(path: str | os.PathLike) -> dict:
    """A JSON or TOML file with TrainConfig keys (model options under `model`)."""
    path = Path(path)
    if not path.is_file():
        raise TrainingError(f"{path}: no such config file")
    try:
        if path.suffix == ".toml":
            try:
                import tomllib
            except ImportError:     # Python 3.10
                raise TrainingError(f"{path}: TOML config files need Python 3.11; use JSON") from None
            return tomllib.loads(path.read_text())
        return json.loads(path.read_text())
    except ValueError as exc:
        raise TrainingError(f"{path}: cannot parse config ({exc})") from None


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    pointer = Path(run_dir) / CHECKPOINTS / "latest"
    if not pointer.is_file():
        return None
    ckpt = pointer.parent / pointer.read_text().strip()
    return ckpt if (ckpt / WEIGHTS_NAME).is_file() else None


def load_run_config(run_dir: str | os.PathLike) -> TrainConfig:
    path = Path(run_dir) / CONFIG_NAME
    if not path.is_file():
        raise TrainingError(f"{path}: no such file (is {run_dir} a vc-train run directory?)")
    try:
        return TrainConfig.from_dict(json.loads(path.read_text()))
    except ValueError as exc:
        raise TrainingError(f"{path}: {exc}") from None


def load_model(run_dir: str | os.PathLike, checkpoint: str | os.PathLike | None = None) -> tuple[DSAE, dict]:
    """The model of a run (latest checkpoint unless one is named) and that checkpoint's state.json."""
    from safetensors.torch import load_file
    ckpt = Path(checkpoint) if checkpoint else latest_checkpoint(run_dir)
    if ckpt is None or not (ckpt / WEIGHTS_NAME).is_file():
        raise TrainingError(f"{run_dir}: no checkpoint with {WEIGHTS_NAME} (has training written one yet?)")
    state = json.loads((ckpt / "state.json").read_text())
    model = DSAE(DSAEConfig.from_dict(state["model_config"]))
    model.load_state_dict(load_file(ckpt / WEIGHTS_NAME))
    return model, state


def _load_initial_weights(model: DSAE, source: str, device):
    """Weights from a run directory (its latest checkpoint) or a checkpoint directory, shapes checked."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    path = Path(source)
    ckpt = latest_checkpoint(path) if (path / CHECKPOINTS).is_dir() else path
    if ckpt is None or not (ckpt / WEIGHTS_NAME).is_file():
        raise TrainingError(f"{source}: no {WEIGHTS_NAME} there (give a run directory or a checkpoint directory)")
    try:
        weights = load_file(ckpt / WEIGHTS_NAME, device=str(device))
    except (SafetensorError, OSError) as exc:
        raise TrainingError(f"{ckpt / WEIGHTS_NAME}: cannot read it ({exc})") from None
    own = model.state_dict()
    wrong = [k for k in own if k not in weights or weights[k].shape != own[k].shape]
    extra = [k for k in weights if k not in own]
    if wrong or extra:
        raise TrainingError(f"{ckpt / WEIGHTS_NAME}: does not fit this model "
                            f"({', '.join((wrong + extra)[:3])}{' ...' if len(wrong + extra) > 3 else ''}); "
                            "the model options must match the run it came from")
    model.load_state_dict(weights)


def _save_checkpoint(run_dir: Path, model: DSAE, optimizer, state: dict, keep: int):
    from safetensors.torch import save_file
    ckpt_root = run_dir / CHECKPOINTS
    ckpt_root.mkdir(exist_ok=True)
    name = f"step-{state['global_step']:09d}"
    tmp = Path(tempfile.mkdtemp(dir=ckpt_root, prefix=f".{name}."))
    try:
        weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(weights, tmp / WEIGHTS_NAME)
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        (tmp / "state.json").write_text(json.dumps(state, indent=1))
        final = ckpt_root / name
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _atomic_write_text(ckpt_root / "latest", name + "\n")
    old = sorted(p for p in ckpt_root.glob("step-*") if p.is_dir() and p.name != name)
    for stale in old[:max(0, len(old) - (keep - 1))]:
        shutil.rmtree(stale, ignore_errors=True)


def _write_logs(run_dir: Path, history: list[dict], *, plot: bool = True):
    if not history:
        return
    columns = list(dict.fromkeys(k for row in history for k in row))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns)
    writer.writeheader()
    writer.writerows(history)
    _atomic_write_text(run_dir / "log.csv", buf.getvalue())
    if plot:
        _plot_losses(run_dir, history)


def _plot_losses(run_dir: Path, history: list[dict]):
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    epochs = [r["epoch"] for r in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(epochs, [r["train_loss"] for r in history], "o-", label="train loss")
    ax1.plot(epochs, [-r["train_elbo"] for r in history], "o-", label="train -ELBO")
    if "val_elbo" in history[0]:
        ax1.plot(epochs, [-r["val_elbo"] for r in history], "o-", label="dev -ELBO")
    ax1.set_xlabel("epoch"); ax1.set_ylabel("nats per segment"); ax1.legend(); ax1.grid(alpha=0.3)
    for key in ("train_kl_f", "train_kl_z", "train_adv_ce"):
        if key in history[0]:
            ax2.plot(epochs, [r[key] for r in history], "o-", label=key[6:])
    ax2.set_xlabel("epoch"); ax2.set_ylabel("nats per segment"); ax2.legend(); ax2.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, run_dir / "loss.png", dpi=80)
    plt.close(fig)


# ----------------------------------------------------------------------------- the loop

def _learning_rate(config: TrainConfig, step: int, total_steps: int) -> float:
    if config.lr_schedule == "constant" or total_steps <= 1:
        return config.lr
    progress = min(1.0, step / (total_steps - 1))
    low = config.lr * config.lr_final_fraction
    return low + 0.5 * (config.lr - low) * (1.0 + math.cos(math.pi * progress))


@torch.no_grad()
def evaluate(model: DSAE, data: SegmentDataset, device, *, max_segments: int, seed: int,
             batch_size: int = 256) -> dict:
    """Mean paper-ELBO terms (nats per segment) on up to max_segments fixed dev segments."""
    rng = np.random.default_rng([seed, 12345])
    indices = np.arange(len(data))
    if len(indices) > max_segments:
        indices = np.sort(rng.choice(indices, max_segments, replace=False))
    sums, n = {}, 0
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        torch.manual_seed(seed + 777)
        for i in range(0, len(indices), batch_size):
            x = torch.from_numpy(data.batch(indices[i:i + batch_size])).to(device)
            for k, v in model.elbo_terms(x).items():
                sums[k] = sums.get(k, 0.0) + float(v.sum())
            n += x.shape[0]
    return {k: v / n for k, v in sums.items()}


RESUMABLE_CHANGES = ("epochs", "device", "threads", "progress", "features")


def _prepare_run_dir(config: TrainConfig, run_dir: Path, resume: bool) -> TrainConfig:
    if resume:
        stored = load_run_config(run_dir)
        # Only what does not change the result may differ on resumption (and epochs, to extend a run).
        changed = [k for k, v in config.to_dict().items()
                   if k not in RESUMABLE_CHANGES + ("out",) and v != getattr(stored, k)]
        if changed:
            raise TrainingError(f"{run_dir}: --resume cannot change {', '.join(changed)} "
                                f"(stored in {run_dir / CONFIG_NAME})")
        return config
    if latest_checkpoint(run_dir) is not None or (run_dir / CONFIG_NAME).exists():
        raise TrainingError(f"{run_dir}: already holds a run; use --resume to continue it or choose another --out")
    return config


def resume_config(run_dir: str | os.PathLike, **changes) -> TrainConfig:
    """The stored configuration of a run with the allowed changes (RESUMABLE_CHANGES) applied."""
    stored = load_run_config(run_dir).to_dict()
    for key, value in changes.items():
        if value is None:
            continue
        if key not in RESUMABLE_CHANGES:
            raise TrainingError(f"{run_dir}: --resume cannot change {key}")
        stored[key] = value
    stored["out"] = str(run_dir)
    return TrainConfig.from_dict(stored)


def train(config: TrainConfig, *, resume: bool = False, stop_after_steps: int | None = None,
          log=None) -> dict:
    """Train (or resume) a run; returns the final state (counters, history).

    stop_after_steps ends the process's work after that many optimiser steps without a final checkpoint,
    as a kill would (for tests of resumption).
    """
    procs = _setup_processes(config)
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    run_dir = Path(config.out)
    # Every rank checks before any rank writes (the barrier below), so none sees another's fresh files.
    config = _prepare_run_dir(config, run_dir, resume)
    if procs.world > 1:
        dist.barrier()
    if procs.main:
        run_dir.mkdir(parents=True, exist_ok=True)

    try:
        train_set = SegmentDataset(config.features, "train")
    except CacheError as exc:
        raise TrainingError(str(exc)) from None
    dev_set = None
    if (Path(config.features) / "dev").is_dir():
        try:
            dev_set = SegmentDataset(config.features, "dev", speakers=train_set.speakers)
        except CacheError as exc:
            raise TrainingError(str(exc)) from None

    model_config = DSAEConfig.from_dict({**config.model, "feature_dim": train_set.feature_dim,
                                         "n_speakers": len(train_set.speakers)})
    torch.manual_seed(config.seed)
    model = DSAE(model_config).to(procs.device)
    if config.init_from and not resume:
        # before anything is written: a run that cannot start leaves no run directory behind to refuse later
        _load_initial_weights(model, config.init_from, procs.device)
        if procs.main:
            log(f"{run_dir}: starting from the weights in {config.init_from}")
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)

    manifest = read_manifest(config.features)
    if procs.main and not resume:
        _atomic_write_text(run_dir / CONFIG_NAME, json.dumps(config.to_dict(), indent=2))
        _atomic_write_text(run_dir / "cache_manifest.json", json.dumps(manifest, indent=2))
        np.save(run_dir / "cache_mean.npy", train_set.mean)
        np.save(run_dir / "cache_std.npy", train_set.std)

    adv_group = model_config.adv_group_size if model_config.adv_weight > 0 else 1
    if config.batch_size % adv_group:
        raise TrainingError(f"batch_size {config.batch_size} is not a multiple of adv_group_size {adv_group}")
    # with groups, a speaker's leftover segments sit out an epoch: count only whole groups
    usable = len(train_set) if adv_group == 1 else int(sum(
        (n // adv_group) * adv_group for n in np.unique(train_set.segment_speaker, return_counts=True)[1]))
    per_rank = usable // procs.world
    if adv_group > 1:
        per_rank = (usable // adv_group // procs.world) * adv_group
    if per_rank < 1:
        raise TrainingError(f"{config.features}: {len(train_set)} training segments for {procs.world} processes")
    steps_per_epoch = max(1, per_rank // config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    state = {"epoch": 0, "step_in_epoch": 0, "global_step": 0, "sums": {}, "count": 0, "history": [],
             "elapsed_s": 0.0}

    if resume:
        ckpt = latest_checkpoint(run_dir)
        if ckpt is None:
            raise TrainingError(f"{run_dir}: --resume, but no checkpoint has been written yet")
        from safetensors.torch import load_file
        model.load_state_dict(load_file(ckpt / WEIGHTS_NAME, device=str(procs.device)))
        optimizer.load_state_dict(torch.load(ckpt / "optimizer.pt", map_location=procs.device,
                                             weights_only=True))
        state = json.loads((ckpt / "state.json").read_text())
        if procs.main:
            log(f"resuming {run_dir} from {ckpt.name} (epoch {state['epoch'] + 1}, step {state['step_in_epoch']})")

    net = model
    if procs.world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[procs.local_rank] if procs.device.type == "cuda" else None)

    def checkpoint():
        if procs.main:
            _save_checkpoint(run_dir, model, optimizer,
                             {**state, "model_config": model_config.to_dict(), "world_size": procs.world,
                              "rng": "seeded per (seed, epoch) for data and (seed, rank, step) for noise"},
                             config.keep_checkpoints)

    use_partner = model_config.f_swap_prob > 0
    change_voice = None
    if model_config.z_invariance_weight > 0:
        first_bin = int(bool(manifest.get("feature_config", {}).get("drop_dc", False)))
        change_voice = VoicePerturbation(train_set.mean, train_set.std, first_bin=first_bin, **config.voice_change)
    level_std = torch.as_tensor(train_set.std, dtype=torch.float32)
    started = time.perf_counter() - state["elapsed_s"]
    steps_done_here = 0
    last_plot = time.perf_counter()
    for epoch in range(state["epoch"], config.epochs):
        rng = np.random.default_rng([config.seed, epoch])
        if adv_group > 1:
            # ranks take whole groups so that every rank's batches keep same-speaker runs intact
            groups = train_set.grouped_order(rng, adv_group).reshape(-1, adv_group)
            order = groups[procs.rank::procs.world][:per_rank // adv_group].ravel()
        else:
            order = rng.permutation(len(train_set))[procs.rank:procs.world * per_rank:procs.world]
        order_mine = order
        partners_mine = train_set.partners(order, rng) if use_partner else None

        bar = None
        if procs.main and config.progress:
            from tqdm import tqdm
            bar = tqdm(total=steps_per_epoch, initial=state["step_in_epoch"], desc=f"epoch {epoch + 1}/{config.epochs}",
                       unit="step", dynamic_ncols=True, leave=True)
        for step in range(state["step_in_epoch"], steps_per_epoch):
            batch = order_mine[step * config.batch_size:(step + 1) * config.batch_size]
            x = torch.from_numpy(train_set.batch(batch)).to(procs.device, non_blocking=True)
            partner = (torch.from_numpy(train_set.batch(partners_mine[step * config.batch_size:
                                                                     (step + 1) * config.batch_size]))
                       .to(procs.device, non_blocking=True) if use_partner else None)
            speaker = torch.from_numpy(train_set.segment_speaker[batch]).to(procs.device)
            lr = _learning_rate(config, state["global_step"], total_steps)
            for group in optimizer.param_groups:
                group["lr"] = lr

            torch.manual_seed(int(np.random.SeedSequence([config.seed, procs.rank, state["global_step"]]).generate_state(1)[0]))
            x_changed = change_voice(x) if change_voice is not None else None
            if partner is not None and config.partner_max_gain > 0:
                partner = change_level(partner, level_std, config.partner_max_gain)
            loss, terms = net(x, partner, speaker, step=state["global_step"], x_changed=x_changed)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)

            names = sorted(terms)
            values = torch.stack([terms[k].float() for k in names] + [loss.detach().float(), grad_norm.float()])
            if procs.world > 1:
                dist.all_reduce(values)
                values /= procs.world
            values = values.cpu()
            if not torch.isfinite(values).all():
                if bar:
                    bar.close()
                last = latest_checkpoint(run_dir)
                what = "loss" if not torch.isfinite(values[-2]) else "gradient"
                where = (f"the last good checkpoint, {last}, is intact (resume from it with a lower --lr)"
                         if last else "no checkpoint had been written yet")
                raise TrainingError(f"{what} became {float(values[-2] if what == 'loss' else values[-1])} at "
                                    f"epoch {epoch + 1}, step {step + 1} (global step {state['global_step'] + 1}); "
                                    f"stopped: {where}")
            optimizer.step()

            for k, v in zip(names, values[:len(names)].tolist()):
                state["sums"][k] = state["sums"].get(k, 0.0) + v
            state["count"] += 1
            state["global_step"] += 1
            state["step_in_epoch"] = step + 1
            steps_done_here += 1
            if bar:
                mean = {k: state["sums"][k] / state["count"] for k in ("loss", "recon", "kl_f", "kl_z", "adv_acc")
                        if k in state["sums"]}
                bar.set_postfix({k: f"{v:.4g}" for k, v in mean.items()}, refresh=False)
                bar.update(1)
            if stop_after_steps is not None and steps_done_here >= stop_after_steps:
                if bar:
                    bar.close()
                if procs.world > 1:
                    dist.barrier()
                return state
            if state["global_step"] % config.checkpoint_every == 0 and state["step_in_epoch"] < steps_per_epoch:
                state["elapsed_s"] = time.perf_counter() - started
                checkpoint()
        if bar:
            bar.close()

        row = {"epoch": epoch + 1, "global_step": state["global_step"], "lr": lr}
        row.update({f"train_{k}": v / max(1, state["count"]) for k, v in sorted(state["sums"].items())})
        if procs.main and dev_set is not None:
            val = evaluate(model, dev_set, procs.device, max_segments=config.val_max_segments, seed=config.seed)
            row.update({f"val_{k}": v for k, v in val.items()})
        state["elapsed_s"] = time.perf_counter() - started
        row["time_s"] = round(state["elapsed_s"], 2)
        state["history"].append(row)
        state.update(epoch=epoch + 1, step_in_epoch=0, sums={}, count=0)
        checkpoint()
        if procs.main:
            # The plot costs a second or two: at most once a minute, and always after the last epoch.
            last_epoch = epoch + 1 == config.epochs
            plot = last_epoch or time.perf_counter() - last_plot > 60
            _write_logs(run_dir, state["history"], plot=plot)
            if plot:
                last_plot = time.perf_counter()
            val_text = f", dev ELBO {row['val_elbo']:.2f}" if "val_elbo" in row else ""
            log(f"epoch {epoch + 1}: loss {row['train_loss']:.2f}, train ELBO {row['train_elbo']:.2f}{val_text} "
                f"({row['time_s']:.0f} s)")
        if procs.world > 1:
            dist.barrier()
    return state
