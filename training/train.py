"""Training loop for the DSAE: exact resumption, validation, logs, DistributedDataParallel.

The run directory and its checkpoints: training.checkpoints. The configuration (trainer settings, the
model's architecture under `model`, the loss weights under `objective`): training.config.

Exact resumption: the epoch's order and same-speaker partners come from a generator seeded by (seed, epoch)
and the reparameterisation noise from one seeded by (seed, rank, step), so the only state to keep is the
weights, the optimiser and the counters. A resumed run redoes the steps after the last checkpoint and ends
with the same weights as an uninterrupted one.

Fine-tuning (`init_from`): a new run starts from another run's weights (or a model directory's:
training.model_dir), with a fresh optimiser and schedule; the shipped model was made in such stages
(models/default/README.md). `train_only` holds all but some parameters fixed.

Several processes: launch the same command under `torchrun --nproc_per_node N`; each rank takes every
N-th segment of the epoch's order, gradients are averaged by DDP (gloo on CPU, nccl on GPU) and rank 0
writes checkpoints and logs.
"""
from __future__ import annotations

import csv
import io
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import distributed as dist

from training.augment import VoicePerturbation, change_level
from training.checkpoints import (CONFIG_NAME, WEIGHTS_NAME, latest_checkpoint, load_initial_weights,
                                  load_model, load_run_config, resume_from_checkpoint, save_checkpoint,
                                  write_run_files, write_text)
from training.config import (DEFAULT_MODEL, DEFAULT_OBJECTIVE, VOICE_CHANGE, Objective, TrainConfig,
                             TrainingError, load_config_file)
from training.dataset import CacheError, SegmentDataset
from training.dsae import DSAE, DSAEConfig
from vc.files import save_figure

# Re-exported: the names callers used before checkpoints and configuration had modules of their own.
__all__ = ["train", "evaluate", "resume_config", "RESUMABLE_CHANGES", "TrainConfig", "TrainingError",
           "Objective", "DEFAULT_MODEL", "DEFAULT_OBJECTIVE", "VOICE_CHANGE", "load_config_file",
           "load_run_config", "load_model", "latest_checkpoint", "CONFIG_NAME", "WEIGHTS_NAME"]


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


# ----------------------------------------------------------------------------- logs

def _write_logs(run_dir: Path, history: list[dict], *, plot: bool = True):
    if not history:
        return
    columns = list(dict.fromkeys(k for row in history for k in row))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns)
    writer.writeheader()
    writer.writerows(history)
    write_text(run_dir / "log.csv", buf.getvalue())
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


# ----------------------------------------------------------------------------- schedule and validation

def _learning_rate(config: TrainConfig, step: int, total_steps: int) -> float:
    # A fine-tune starts Adam afresh, whose first steps move every weight by about the learning rate whatever
    # its gradient: the warm-up lets its moment estimates settle first (docs/experiments.md, stop 39).
    warm = min(1.0, (step + 1) / config.lr_warmup_steps) if config.lr_warmup_steps > 0 else 1.0
    if config.lr_schedule == "constant" or total_steps <= 1:
        return warm * config.lr
    progress = min(1.0, step / (total_steps - 1))
    low = config.lr * config.lr_final_fraction
    return warm * (low + 0.5 * (config.lr - low) * (1.0 + math.cos(math.pi * progress)))


@torch.no_grad()
def evaluate(model: DSAE, data: SegmentDataset, device, *, max_segments: int, seed: int,
             batch_size: int = 256) -> dict:
    """Mean paper-ELBO terms (nats per segment) on up to max_segments fixed dev segments."""
    rng = np.random.default_rng([seed, 12345])
    indices = np.arange(len(data))
    if len(indices) > max_segments:
        indices = np.sort(rng.choice(indices, max_segments, replace=False))
    sums, n = {}, 0
    was_training = model.training
    model.eval()        # batch normalisation (video frame coders) uses its running statistics here
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        torch.manual_seed(seed + 777)
        for i in range(0, len(indices), batch_size):
            x = torch.from_numpy(data.batch(indices[i:i + batch_size])).to(device)
            for k, v in model.elbo_terms(x).items():
                sums[k] = sums.get(k, 0.0) + float(v.sum())
            n += x.shape[0]
    model.train(was_training)
    return {k: v / n for k, v in sums.items()}


RESUMABLE_CHANGES = ("epochs", "device", "threads", "progress", "features")


def _check_run_dir(config: TrainConfig, run_dir: Path, resume: bool):
    if resume:
        stored = load_run_config(run_dir)
        # Only what does not change the result may differ on resumption (and epochs, to extend a run).
        changed = [k for k, v in config.to_dict().items()
                   if k not in RESUMABLE_CHANGES + ("out",) and v != getattr(stored, k)]
        if changed:
            raise TrainingError(f"{run_dir}: --resume cannot change {', '.join(changed)} "
                                f"(stored in {run_dir / CONFIG_NAME})")
    elif latest_checkpoint(run_dir) is not None or (run_dir / CONFIG_NAME).exists():
        raise TrainingError(f"{run_dir}: already holds a run; use --resume to continue it or choose another --out")


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


# ----------------------------------------------------------------------------- setting a run up

def _open_datasets(config: TrainConfig):
    """(train, dev or None) for the run's kind of data; a speech cache's dev split, when it has one, uses the
    speaker indices of the train split."""
    if config.data == "balls":
        from training.balls.data import open_balls
        return open_balls(config.features)
    if config.data == "sprites":
        from training.sprites.data import open_sprites
        try:
            return open_sprites(config.features)
        except ValueError as exc:
            raise TrainingError(str(exc)) from None
    try:
        train_set = SegmentDataset(config.features, "train")
        dev_set = None
        if (Path(config.features) / "dev").is_dir():
            dev_set = SegmentDataset(config.features, "dev", speakers=train_set.speakers)
    except CacheError as exc:
        raise TrainingError(str(exc)) from None
    return train_set, dev_set


def _build_model(config: TrainConfig, objective: Objective, train_set: SegmentDataset, device) -> DSAE:
    # The adversary's head exists only when the objective uses it, so its weights are absent otherwise.
    n_speakers = len(train_set.speakers) if objective.adv_weight > 0 else 0
    # Likewise the content head, sized by the cache's content targets.
    content_dim = 0
    if objective.content_weight > 0:
        if getattr(train_set, "content", None) is None:
            raise TrainingError(f"{config.features}: content_weight > 0 needs content targets "
                                "(vc-features ... --content-targets)")
        content_dim = int(train_set.content.shape[1])
    model_config = DSAEConfig.from_dict({**config.model, "feature_dim": train_set.feature_dim,
                                         "n_speakers": n_speakers, "content_dim": content_dim})
    torch.manual_seed(config.seed)
    return DSAE(model_config).to(device)


@dataclass
class _Plan:
    """How an epoch is cut: adversary group size, segments per rank, optimiser steps."""
    group: int
    per_rank: int
    steps_per_epoch: int
    total_steps: int


def _plan_epochs(config: TrainConfig, objective: Objective, train_set: SegmentDataset, world: int) -> _Plan:
    group = objective.adv_group_size if objective.adv_weight > 0 else 1
    if config.batch_size % group:
        raise TrainingError(f"batch_size {config.batch_size} is not a multiple of adv_group_size {group}")
    # with groups, a speaker's leftover segments sit out an epoch: count only whole groups
    usable = len(train_set) if group == 1 else int(sum(
        (n // group) * group for n in np.unique(train_set.segment_speaker, return_counts=True)[1]))
    per_rank = usable // world
    if group > 1:
        per_rank = (usable // group // world) * group
    if per_rank < 1:
        raise TrainingError(f"{config.features}: {len(train_set)} training segments for {world} processes")
    steps_per_epoch = max(1, per_rank // config.batch_size)
    return _Plan(group, per_rank, steps_per_epoch, steps_per_epoch * config.epochs)


def _voice_changer(config: TrainConfig, objective: Objective, train_set: SegmentDataset):
    if objective.z_invariance_weight <= 0:
        return None
    first_bin = int(bool(train_set.manifest.get("feature_config", {}).get("drop_dc", False)))
    return VoicePerturbation(train_set.mean, train_set.std, first_bin=first_bin, **config.voice_change)


def _load_judge(weight: float, weight_name: str, run_dir: str, run_option: str, command: str, load):
    """A frozen judge's run, loaded when its term has weight (None otherwise); one-line errors."""
    if weight <= 0:
        return None
    if not run_dir:
        raise TrainingError(f"{weight_name} > 0 needs {run_option}: the run directory of `{command}`")
    try:
        return load(run_dir)
    except FileNotFoundError as exc:
        raise TrainingError(str(exc)) from None


def _phone_judge(config: TrainConfig, objective: Objective, train_set: SegmentDataset, device):
    """The frozen recogniser of the phone_keep term, scoring frames normalised as the cache's are."""
    from training.phones import PhoneJudge, load_run
    loaded = _load_judge(objective.phone_keep_weight, "phone_keep_weight", config.phone_judge, "phone_judge",
                         "python -m training.phones train", load_run)
    if loaded is None:
        return None
    net, _ = loaded
    if net.cfg.n_features != train_set.feature_dim:
        raise TrainingError(f"{config.phone_judge}: the recogniser reads {net.cfg.n_features} bins, "
                            f"{config.features} has {train_set.feature_dim}")
    return PhoneJudge(net, train_set.mean, train_set.std).to(device)


def _speaker_judge(config: TrainConfig, objective: Objective, train_set: SegmentDataset, device):
    """The frozen speaker recogniser of the voice_judge term, naming this cache's train speakers in order."""
    from training.speaker_judge import SpeakerJudge, load_run
    loaded = _load_judge(objective.voice_judge_weight, "voice_judge_weight", config.speaker_judge, "speaker_judge",
                         "python -m training.speaker_judge train --features CACHE", load_run)
    if loaded is None:
        return None
    net, speakers = loaded
    if list(speakers) != list(train_set.speakers):
        raise TrainingError(f"{config.speaker_judge}: the recogniser knows other speakers than {config.features}'s "
                            f"train split ({len(speakers)} against {len(train_set.speakers)}); train it on this cache")
    return SpeakerJudge(net, train_set.mean, train_set.std).to(device)


def _trainable(model: DSAE, prefixes: list[str]) -> list[str]:
    """Hold every parameter fixed but those whose names start with one of `prefixes` (all when empty)."""
    names = [name for name, _ in model.named_parameters()]
    if not prefixes:
        return names
    unmatched = [p for p in prefixes if not any(n.startswith(p) for n in names)]
    if unmatched:
        raise TrainingError(f"train_only: no parameter of this model starts with {unmatched[0]!r} "
                            f"(its parameters start with: {_prefixes(names)})")
    trained = []
    for name, param in model.named_parameters():
        param.requires_grad_(name.startswith(tuple(prefixes)))
        if param.requires_grad:
            trained.append(name)
    return trained


def _prefixes(names: list[str]) -> str:
    """'x_logvar, prior_lstm.*, ...': parameter names shortened to their modules, in order."""
    seen = []
    for name in names:
        short = name.split(".")[0] + (".*" if "." in name else "")
        if short not in seen:
            seen.append(short)
    return ", ".join(seen)


def _new_state() -> dict:
    return {"epoch": 0, "step_in_epoch": 0, "global_step": 0, "sums": {}, "count": 0, "history": [],
            "elapsed_s": 0.0}


def train(config: TrainConfig, *, resume: bool = False, stop_at_step: int | None = None,
          stop_after_steps: int | None = None, log=None) -> dict:
    """Train (or resume) a run; returns the final state (counters, history).

    stop_at_step pauses the run at that global step with a checkpoint of it, which `resume` goes on from: the
    learning-rate schedule stays the whole run's, so a checkpoint picked on the dev speakers part-way through
    a run is reproduced exactly. stop_after_steps ends the process's work after that many optimiser steps
    without a final checkpoint, as a kill would (for tests of resumption).
    """
    if stop_at_step is not None and stop_at_step < 1:
        raise TrainingError(f"the step to stop at must be 1 or more, not {stop_at_step}")
    procs = _setup_processes(config)
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    run_dir = Path(config.out)
    # Every rank checks before any rank writes (the barrier below), so none sees another's fresh files.
    _check_run_dir(config, run_dir, resume)
    if procs.world > 1:
        dist.barrier()
    if procs.main:
        run_dir.mkdir(parents=True, exist_ok=True)

    train_set, dev_set = _open_datasets(config)
    objective = Objective.from_dict(config.objective)
    model = _build_model(config, objective, train_set, procs.device)
    if config.init_from and not resume:
        # before anything is written: a run that cannot start leaves no run directory behind to refuse later
        fresh = load_initial_weights(model, config.init_from, procs.device, norm=(train_set.mean, train_set.std))
        if procs.main:
            log(f"{run_dir}: starting from the weights in {config.init_from}")
            if fresh:
                log(f"{run_dir}: not in {config.init_from}, starting as built: {_prefixes(fresh)}")
    trained = _trainable(model, config.train_only)
    if procs.main and config.train_only:
        log(f"{run_dir}: training only {_prefixes(trained)}; the rest is held fixed")
    judge = _phone_judge(config, objective, train_set, procs.device)
    speaker_judge = _speaker_judge(config, objective, train_set, procs.device)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=config.lr)
    plan = _plan_epochs(config, objective, train_set, procs.world)
    if procs.main and not resume:
        write_run_files(run_dir, config, train_set.manifest, train_set.mean, train_set.std)

    state = _new_state()
    if resume:
        state, ckpt = resume_from_checkpoint(run_dir, model, optimizer, procs.device)
        if procs.main:
            log(f"resuming {run_dir} from {ckpt.name} (epoch {state['epoch'] + 1}, step {state['step_in_epoch']})")
    if stop_at_step is not None and state["global_step"] >= stop_at_step:
        raise TrainingError(f"{run_dir} is at step {state['global_step']} already, past the step to stop at "
                            f"({stop_at_step})")
    loop = _Loop(config, procs, run_dir, model, optimizer, objective, train_set, dev_set, plan, state, log, judge,
                 speaker_judge)
    state = loop.run(stop_at_step, stop_after_steps)
    if stop_at_step is not None and state["global_step"] == stop_at_step and procs.main:
        log(f"{run_dir}: paused at step {stop_at_step} (checkpoint step-{stop_at_step:09d}); go on with --resume")
    return state


# ----------------------------------------------------------------------------- the loop

class _Loop:
    """The epochs of one run: each step, the end of each epoch, checkpoints. `state` is what a checkpoint
    keeps (counters, running sums of the logged terms, per-epoch history)."""

    def __init__(self, config: TrainConfig, procs: _Processes, run_dir: Path, model: DSAE, optimizer,
                 objective: Objective, train_set: SegmentDataset, dev_set: SegmentDataset | None, plan: _Plan,
                 state: dict, log, judge=None, speaker_judge=None):
        self.config, self.procs, self.run_dir, self.log = config, procs, run_dir, log
        self.model, self.optimizer, self.objective = model, optimizer, objective
        self.train_set, self.dev_set, self.plan, self.state = train_set, dev_set, plan, state
        self.net = model
        if procs.world > 1:
            self.net = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[procs.local_rank] if procs.device.type == "cuda" else None)
        self.change_voice = _voice_changer(config, objective, train_set)
        self.judge, self.speaker_judge = judge, speaker_judge
        self.level_std = torch.as_tensor(train_set.std, dtype=torch.float32)
        self.started = time.perf_counter() - state["elapsed_s"]
        self.last_plot = time.perf_counter()
        self.steps_done_here = 0

    def run(self, stop_at_step: int | None, stop_after_steps: int | None) -> dict:
        for epoch in range(self.state["epoch"], self.config.epochs):
            order, partners = self._epoch_order(epoch)
            lr = self._run_epoch(epoch, order, partners, stop_at_step, stop_after_steps)
            if lr is None:          # stopped on request
                if self.procs.world > 1:
                    dist.barrier()
                return self.state
            self._finish_epoch(epoch, lr)
            if self.procs.world > 1:
                dist.barrier()
            if stop_at_step is not None and self.state["global_step"] >= stop_at_step:
                break
        return self.state

    def _epoch_order(self, epoch: int) -> tuple[np.ndarray, np.ndarray | None]:
        """This rank's segments for the epoch, in order, and their same-speaker partners (f swapping)."""
        procs, plan = self.procs, self.plan
        rng = np.random.default_rng([self.config.seed, epoch])
        if plan.group > 1:
            # ranks take whole groups so that every rank's batches keep same-speaker runs intact
            groups = self.train_set.grouped_order(rng, plan.group).reshape(-1, plan.group)
            order = groups[procs.rank::procs.world][:plan.per_rank // plan.group].ravel()
        else:
            order = rng.permutation(len(self.train_set))[procs.rank:procs.world * plan.per_rank:procs.world]
        partners = self.train_set.partners(order, rng) if self.objective.f_swap_prob > 0 else None
        return order, partners

    def _run_epoch(self, epoch: int, order, partners, stop_at_step: int | None,
                   stop_after_steps: int | None) -> float | None:
        """The epoch's remaining steps; the last learning rate, or None when stopped on request (at
        stop_at_step with a checkpoint, after stop_after_steps without one)."""
        state, batch_size, lr = self.state, self.config.batch_size, self.config.lr
        bar = self._progress_bar(epoch)
        try:
            for step in range(state["step_in_epoch"], self.plan.steps_per_epoch):
                rows = slice(step * batch_size, (step + 1) * batch_size)
                lr = self._learning_rate()
                names, values = self._step(order[rows], partners[rows] if partners is not None else None, lr)
                self._stop_unless_finite(values, epoch, step)
                self.optimizer.step()
                self._count(names, values, step, bar)
                if stop_after_steps is not None and self.steps_done_here >= stop_after_steps:
                    return None
                mid_epoch = state["step_in_epoch"] < self.plan.steps_per_epoch
                stopping = stop_at_step is not None and state["global_step"] == stop_at_step and mid_epoch
                if mid_epoch and (state["global_step"] % self.config.checkpoint_every == 0 or stopping):
                    state["elapsed_s"] = time.perf_counter() - self.started
                    self._checkpoint()
                if stopping:
                    return None
        finally:
            if bar:
                bar.close()
        return lr

    def _progress_bar(self, epoch: int):
        if not (self.procs.main and self.config.progress):
            return None
        from tqdm import tqdm
        return tqdm(total=self.plan.steps_per_epoch, initial=self.state["step_in_epoch"],
                    desc=f"epoch {epoch + 1}/{self.config.epochs}", unit="step", dynamic_ncols=True, leave=True)

    def _learning_rate(self) -> float:
        return _learning_rate(self.config, self.state["global_step"], self.plan.total_steps)

    def _step(self, batch: np.ndarray, partner_batch: np.ndarray | None, lr: float):
        """Forward and backward on one batch; (term names, rank-averaged [terms..., loss, grad norm])."""
        device, data = self.procs.device, self.train_set
        x = torch.from_numpy(data.batch(batch)).to(device, non_blocking=True)
        partner = (torch.from_numpy(data.batch(partner_batch)).to(device, non_blocking=True)
                   if partner_batch is not None else None)
        speaker = torch.from_numpy(data.segment_speaker[batch]).to(device)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        step = self.state["global_step"]
        torch.manual_seed(int(np.random.SeedSequence([self.config.seed, self.procs.rank, step]).generate_state(1)[0]))
        x_changed = self.change_voice(x) if self.change_voice is not None else None
        if partner is not None and self.config.partner_max_gain > 0:
            partner = change_level(partner, self.level_std, self.config.partner_max_gain)
        content = (torch.from_numpy(data.content_batch(batch)).to(device, non_blocking=True)
                   if self.objective.content_weight > 0 else None)
        loss, terms = self.net(x, partner, speaker, step=step, x_changed=x_changed, objective=self.objective,
                               content=content, judge=self.judge, speaker_judge=self.speaker_judge)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        names = sorted(terms)
        values = torch.stack([terms[k].float() for k in names] + [loss.detach().float(), grad_norm.float()])
        if self.procs.world > 1:
            dist.all_reduce(values)
            values /= self.procs.world
        return names, values.cpu()

    def _stop_unless_finite(self, values: torch.Tensor, epoch: int, step: int):
        if torch.isfinite(values).all():
            return
        last = latest_checkpoint(self.run_dir)
        what = "loss" if not torch.isfinite(values[-2]) else "gradient"
        where = (f"the last good checkpoint, {last}, is intact (resume from it with a lower --lr)"
                 if last else "no checkpoint had been written yet")
        raise TrainingError(f"{what} became {float(values[-2] if what == 'loss' else values[-1])} at "
                            f"epoch {epoch + 1}, step {step + 1} (global step {self.state['global_step'] + 1}); "
                            f"stopped: {where}")

    def _count(self, names: list[str], values: torch.Tensor, step: int, bar):
        state = self.state
        for k, v in zip(names, values[:len(names)].tolist()):
            state["sums"][k] = state["sums"].get(k, 0.0) + v
        state["count"] += 1
        state["global_step"] += 1
        state["step_in_epoch"] = step + 1
        self.steps_done_here += 1
        if bar:
            mean = {k: state["sums"][k] / state["count"] for k in ("loss", "recon", "kl_f", "kl_z", "adv_acc")
                    if k in state["sums"]}
            bar.set_postfix({k: f"{v:.4g}" for k, v in mean.items()}, refresh=False)
            bar.update(1)

    def _checkpoint(self):
        if self.procs.main:
            save_checkpoint(self.run_dir, self.model, self.optimizer,
                            {**self.state, "model_config": self.model.config.to_dict(),
                             "world_size": self.procs.world,
                             "rng": "seeded per (seed, epoch) for data and (seed, rank, step) for noise"},
                            self.config.keep_checkpoints)

    def _finish_epoch(self, epoch: int, lr: float):
        """The epoch's log row (train means, dev ELBO), a checkpoint, log.csv and (at most once a minute) the plot."""
        state, config = self.state, self.config
        row = {"epoch": epoch + 1, "global_step": state["global_step"], "lr": lr}
        row.update({f"train_{k}": v / max(1, state["count"]) for k, v in sorted(state["sums"].items())})
        if self.procs.main and self.dev_set is not None:
            val = evaluate(self.model, self.dev_set, self.procs.device, max_segments=config.val_max_segments,
                           seed=config.seed)
            row.update({f"val_{k}": v for k, v in val.items()})
        state["elapsed_s"] = time.perf_counter() - self.started
        row["time_s"] = round(state["elapsed_s"], 2)
        state["history"].append(row)
        state.update(epoch=epoch + 1, step_in_epoch=0, sums={}, count=0)
        self._checkpoint()
        if not self.procs.main:
            return
        # The plot costs a second or two: at most once a minute, and always after the last epoch.
        plot = epoch + 1 == config.epochs or time.perf_counter() - self.last_plot > 60
        _write_logs(self.run_dir, state["history"], plot=plot)
        if plot:
            self.last_plot = time.perf_counter()
        val_text = f", dev ELBO {row['val_elbo']:.2f}" if "val_elbo" in row else ""
        self.log(f"epoch {epoch + 1}: loss {row['train_loss']:.2f}, train ELBO {row['train_elbo']:.2f}{val_text} "
                 f"({row['time_s']:.0f} s)")
