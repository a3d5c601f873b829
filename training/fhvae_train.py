"""Training and loading the FHVAE baseline (training.fhvae) on a vc-features cache.

    RUN/fhvae.json                  what the run was told (FHVAETrainConfig) and the model's FHVAEConfig
    RUN/cache_manifest.json, cache_mean.npy, cache_std.npy
                                    the cache's manifest (feature config) and normalisation, so that an
                                    evaluation needs only the run directory
    RUN/checkpoints/step-N/         model.safetensors, optimizer.pt, state.json (training.checkpoints'
                                    layout: each checkpoint appears whole, `latest` names the newest)

A sequence is an utterance of the cache's train split; the mu2 table has one row per utterance kept
(speakers whose names start with an `exclude_prefix` are left out, e.g. the synthetic voices of a mixed
cache). Segments are drawn uniformly; the batch order and the sampling noise of each step are functions
of (seed, step), so `resume` continues exactly where the run stopped.
"""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ClassVar

import numpy as np
import torch

from training.checkpoints import (OPTIMIZER_NAME, STATE_NAME, WEIGHTS_NAME, latest_checkpoint, save_checkpoint,
                                  write_text)
from training.config import TrainingError
from training.dsae import Options
from training.fhvae import FHVAE, FHVAEConfig

RUN_CONFIG = "fhvae.json"


@dataclass
class FHVAETrainConfig(Options):
    option_kind: ClassVar[str] = "fhvae training"

    features: str = ""
    out: str = ""
    alpha: float = 0.0                 # weight of the discriminative term log p(i | z2bar)
    steps: int = 4000
    batch_size: int = 64
    lr: float = 1e-3                   # Adam, the networks
    mu2_lr: float = 1e-2               # Adam, the mu2 table: each row is seen in few batches, so a larger step
    grad_clip: float = 5.0
    seed: int = 0
    threads: int = 1
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    log_every: int = 50
    exclude_prefix: list = field(default_factory=list)
    model: dict = field(default_factory=dict)

    def __post_init__(self):
        FHVAEConfig.from_dict({k: v for k, v in self.model.items() if k != "n_sequences"})
        if not self.alpha >= 0:
            raise ValueError(f"alpha must not be negative, not {self.alpha}")
        for name in ("steps", "batch_size", "threads", "checkpoint_every", "keep_checkpoints", "log_every"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)}")
        for name in ("lr", "mu2_lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, not {getattr(self, name)}")


class SequenceSegments:
    """The train split's segments with the mu2 row of each one's sequence (utterance) and N_i."""

    def __init__(self, cache_dir, *, exclude_prefix=()):
        from training.dataset import CacheError, SegmentDataset

        try:
            self.data = SegmentDataset(cache_dir, "train")
        except CacheError as exc:
            raise TrainingError(str(exc)) from None
        speaker_names = np.asarray(self.data.speakers)[self.data.segment_speaker]
        keep = np.ones(len(self.data), dtype=bool)
        for prefix in exclude_prefix:
            keep &= ~np.char.startswith(speaker_names.astype(str), prefix)
        self.segments = np.flatnonzero(keep)
        if len(self.segments) == 0:
            raise TrainingError(f"{cache_dir}: no training segments left after excluding {list(exclude_prefix)}")
        utterances, self.sequence = np.unique(self.data.segment_utterance[self.segments], return_inverse=True)
        self.n_sequences = len(utterances)
        self.n_speakers = len(set(speaker_names[self.segments]))
        self.n_segments = np.bincount(self.sequence)[self.sequence]

    def __len__(self) -> int:
        return len(self.segments)

    def batch(self, positions: np.ndarray):
        """(x, sequence, n_segments) tensors for positions among the kept segments."""
        x = torch.from_numpy(np.ascontiguousarray(self.data.batch(self.segments[positions]), dtype=np.float32))
        return x, torch.from_numpy(self.sequence[positions]), torch.from_numpy(self.n_segments[positions])


def batch_positions(n: int, batch_size: int, step: int, seed: int) -> np.ndarray:
    """The segments of a step: epoch e is a permutation seeded by (seed, e), cut into whole batches."""
    per_epoch = max(1, n // batch_size)
    epoch, k = divmod(step, per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(n)
    return order[k * batch_size:(k + 1) * batch_size]


def train(config: FHVAETrainConfig, *, resume: bool = False, steps: int | None = None,
          log: Callable[[str], None] = print) -> Path:
    """Train (or resume) a run; returns its directory. The budget is `config.steps` optimiser steps; on
    resume, `steps` (if given) replaces the run's budget: with a constant step size and the batches and
    noise fixed by (seed, step), a run resumed to N steps is the run trained for N steps from the start."""
    out = Path(config.out)
    if not config.out:
        raise TrainingError("no output directory (--out)")
    if resume:
        config = load_train_config(out)
        config = dataclasses.replace(config, steps=int(steps)) if steps is not None else config
    elif latest_checkpoint(out) is not None:
        raise TrainingError(f"{out}: already holds a run (use --resume, or another --out)")
    torch.set_num_threads(int(config.threads))
    data = SequenceSegments(config.features, exclude_prefix=config.exclude_prefix)
    torch.manual_seed(config.seed)                            # the initial weights
    model = FHVAE(FHVAEConfig.from_dict({**config.model, "feature_dim": data.data.feature_dim,
                                         "n_sequences": data.n_sequences}))
    optimizer = torch.optim.Adam([
        {"params": [p for name, p in model.named_parameters() if name != "mu2"], "lr": config.lr},
        {"params": [model.mu2], "lr": config.mu2_lr}])
    state = {"global_step": 0, "cpu_seconds": 0.0, "wall_seconds": 0.0, "history": []}
    if resume:
        state = _resume(out, model, optimizer)
        if state["global_step"] > config.steps:
            raise TrainingError(f"{out}: its latest checkpoint is at step {state['global_step']}, past --steps "
                                f"{config.steps}")
        write_text(out / RUN_CONFIG, json.dumps({**json.loads((out / RUN_CONFIG).read_text()),
                                                 "steps": config.steps}, indent=2))
    else:
        out.mkdir(parents=True, exist_ok=True)
        _write_run_files(out, config, model.config, data)
    log(f"fhvae: {len(data)} segments of {data.n_sequences} utterances ({data.n_speakers} speakers), "
        f"alpha {config.alpha:g}, from step {state['global_step']} to {config.steps}")
    _loop(model, optimizer, data, config, state, out, log)
    return out


def _loop(model, optimizer, data, config, state, out: Path, log):
    model.train()
    sums, count = {}, 0
    cpu0, wall0 = time.process_time() - state["cpu_seconds"], time.time() - state["wall_seconds"]
    while state["global_step"] < config.steps:
        step = state["global_step"]
        x, sequence, n_segments = data.batch(batch_positions(len(data), config.batch_size, step, config.seed))
        torch.manual_seed(config.seed * 1_000_003 + step)     # the step's sampling noise, for exact resumption
        loss, terms = model(x, sequence, n_segments, alpha=config.alpha)
        if not torch.isfinite(loss):
            raise TrainingError(f"step {step}: the loss is not finite ({float(loss)}); try a smaller --lr")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        state["global_step"] = step + 1
        for k, v in terms.items():
            sums[k] = sums.get(k, 0.0) + float(v)
        count += 1
        state["cpu_seconds"], state["wall_seconds"] = time.process_time() - cpu0, time.time() - wall0
        if state["global_step"] % config.log_every == 0 or state["global_step"] == config.steps:
            means = {k: round(v / count, 4) for k, v in sums.items()}
            state["history"].append({"step": state["global_step"], "cpu_seconds": round(state["cpu_seconds"], 1),
                                     **means})
            log(f"step {state['global_step']}: " + " ".join(f"{k} {v:.4g}" for k, v in means.items())
                + f" ({state['cpu_seconds']:.0f} s CPU)")
            sums, count = {}, 0
        if state["global_step"] % config.checkpoint_every == 0 or state["global_step"] == config.steps:
            save_checkpoint(out, model, optimizer, {**state, "model_config": model.config.to_dict()},
                            config.keep_checkpoints)


def _write_run_files(out: Path, config: FHVAETrainConfig, model_config: FHVAEConfig, data: SequenceSegments):
    record = {**config.to_dict(), "model": model_config.to_dict(),
              "data": {"segments": len(data), "sequences": data.n_sequences, "speakers": data.n_speakers}}
    write_text(out / RUN_CONFIG, json.dumps(record, indent=2))
    write_text(out / "cache_manifest.json", json.dumps(data.data.manifest, indent=2))
    np.save(out / "cache_mean.npy", data.data.mean)
    np.save(out / "cache_std.npy", data.data.std)


def load_train_config(run_dir) -> FHVAETrainConfig:
    path = Path(run_dir) / RUN_CONFIG
    if not path.is_file():
        raise TrainingError(f"{path}: no such file (is {run_dir} an FHVAE run directory?)")
    try:
        record = json.loads(path.read_text())
        record.pop("data", None)
        record["model"] = {k: v for k, v in record.get("model", {}).items()
                           if k not in ("feature_dim", "n_sequences")}
        return FHVAETrainConfig.from_dict(record)
    except (ValueError, TypeError) as exc:
        raise TrainingError(f"{path}: {exc}") from None


def _resume(out: Path, model: FHVAE, optimizer) -> dict:
    ckpt = latest_checkpoint(out)
    if ckpt is None:
        raise TrainingError(f"{out}: --resume, but no checkpoint has been written yet")
    model.load_state_dict(_read_weights(ckpt))
    optimizer.load_state_dict(torch.load(ckpt / OPTIMIZER_NAME, map_location="cpu", weights_only=True))
    state = json.loads((ckpt / STATE_NAME).read_text())
    state.pop("model_config", None)
    return state


def _read_weights(ckpt: Path) -> dict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(ckpt / WEIGHTS_NAME)
    except (SafetensorError, OSError) as exc:
        raise TrainingError(f"{ckpt / WEIGHTS_NAME}: cannot read it ({exc})") from None


def load_fhvae(run_dir) -> tuple[FHVAE, dict]:
    """The model of a run's latest checkpoint (eval mode) and that checkpoint's state.json."""
    ckpt = latest_checkpoint(run_dir)
    if ckpt is None:
        raise TrainingError(f"{run_dir}: no FHVAE checkpoint (train one with `python -m training.fhvae train`)")
    try:
        state = json.loads((ckpt / STATE_NAME).read_text())
        model = FHVAE(FHVAEConfig.from_dict(state["model_config"]))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise TrainingError(f"{ckpt / STATE_NAME}: no usable model_config ({exc})") from None
    try:
        model.load_state_dict(_read_weights(ckpt))
    except RuntimeError as exc:
        raise TrainingError(f"{ckpt / WEIGHTS_NAME}: does not fit its model_config "
                            f"({str(exc).splitlines()[0]})") from None
    return model.eval(), state


def config_from_options(options: dict) -> FHVAETrainConfig:
    """A FHVAETrainConfig from command-line options (None: the default); a bad value is a TrainingError."""
    known = {f.name for f in dataclasses.fields(FHVAETrainConfig)}
    given = {k: v for k, v in options.items() if k in known and v is not None}
    try:
        return FHVAETrainConfig.from_dict(given)
    except (ValueError, TypeError) as exc:
        raise TrainingError(str(exc)) from None
