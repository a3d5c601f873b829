"""What a training run is told: the trainer's settings (`TrainConfig`) and the objective (`Objective`).

As in nanoGPT, where `GPTConfig` holds the architecture and train.py the optimiser and loss settings, the
model's `DSAEConfig` (training.dsae) holds only what shapes the network and its parameter names; the
loss weights and their schedule live here, with the trainer:

    {"epochs": 6, "lr": 0.001, ...,
     "model":     {"f_dim": 64, "z_dim": 32, "hidden_dim": 256, "frame_hidden": 256, "variant": "full"},
     "objective": {"kl_warmup_steps": 2000, "f_swap_prob": 1.0, "adv_weight": 30.0, ...},
     "voice_change": {"max_pitch": 1.5, ...}}

Older configs (run directories' config.json, checkpoints' state.json, train-config files written before
the split) put the objective's keys under "model". They still load: `split_model_options` moves those keys
to the objective (an error only when a key is given in both places with different values), and a
checkpoint's model config written by a run without an adversary (adv_weight 0) gets n_speakers 0, which is
what builds the same network without an adversary head.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from training.dsae import DSAEConfig, Options, reject_unknown_options


class TrainingError(RuntimeError):
    """A clear, one-line reason why training cannot start or had to stop."""


@dataclass
class Objective(Options):
    """The loss the trainer minimises: the paper's negative ELBO plus named, separately logged options.

    kl_f_weight, kl_z_weight: beta weights of the two KL terms; kl_warmup_steps: both ramp linearly from 0
    over this many steps; free_bits_z: nats per z dimension per frame below which KL_z is not penalised;
    f_swap_prob: probability that a segment is decoded with f from a same-speaker partner;
    adv_weight: weight of the reversed-gradient speaker classifier on mean_t z (0: no adversary);
    adv_group_size: it sees mean_t z averaged over groups of this many same-speaker segments (the trainer
    builds batches of such groups); z_invariance_weight: weight of the symmetric KL between q(z | x, f) and
    q(z | voice-changed x, f); content_weight: weight of the error of a head that predicts, from z_t alone, a
    speech recogniser's encoding of the same instant (needs the cache's content targets and the model's
    content_dim), so that pushing the speaker out of z does not push the words out too; phone_keep_weight:
    weight of the KL between the phones a frozen recogniser (the run's `phone_judge`) hears in a segment and
    in the same segment decoded with another speaker's f, so that changing the voice keeps the phones;
    voice_reach_weight: weight of the distance between another segment's f and what a fixed f encoder finds
    in this segment's z decoded with it, so that the decoder reaches a voice by itself; voice_judge_weight:
    weight of the cross-entropy with which a frozen speaker recogniser trained apart from the DSAE (the run's
    `speaker_judge`) hears that converted segment as the other segment's speaker: another listener than the
    DSAE's own f encoder. Why each exists
    and what it measured: docs/experiments.md, "The DSAE objective".
    """

    option_kind: ClassVar[str] = "objective"

    kl_f_weight: float = 1.0
    kl_z_weight: float = 1.0
    kl_warmup_steps: int = 0
    free_bits_z: float = 0.0
    f_swap_prob: float = 0.0
    adv_weight: float = 0.0
    adv_group_size: int = 1
    z_invariance_weight: float = 0.0
    content_weight: float = 0.0
    phone_keep_weight: float = 0.0
    # How far f moves towards the other segment's in that term: a share drawn uniformly from this range
    # (1, 1: the other's f itself; (0, 2) also covers the reconstruction and the runtime's strengths).
    phone_keep_strengths: tuple = (1.0, 1.0)
    voice_reach_weight: float = 0.0
    voice_judge_weight: float = 0.0

    def __post_init__(self):
        self.phone_keep_strengths = tuple(float(v) for v in self.phone_keep_strengths)
        if len(self.phone_keep_strengths) != 2 or not 0 <= self.phone_keep_strengths[0] <= self.phone_keep_strengths[1]:
            raise ValueError(f"phone_keep_strengths must be a range [low, high] with 0 <= low <= high, "
                             f"not {list(self.phone_keep_strengths)}")
        if int(self.adv_group_size) < 1:
            raise ValueError(f"adv_group_size must be at least 1, not {self.adv_group_size}")
        if not 0.0 <= self.f_swap_prob <= 1.0:
            raise ValueError(f"f_swap_prob must be in [0, 1], not {self.f_swap_prob}")
        for name in ("kl_warmup_steps", "free_bits_z", "adv_weight", "z_invariance_weight", "content_weight",
                     "phone_keep_weight", "voice_reach_weight", "voice_judge_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, not {getattr(self, name)}")

    def kl_weight(self, step: int) -> float:
        """The warm-up factor of both KL terms at an optimiser step."""
        return min(1.0, step / self.kl_warmup_steps) if self.kl_warmup_steps > 0 else 1.0



OBJECTIVE_OPTIONS = tuple(f.name for f in dataclasses.fields(Objective))

# Defaults for speech: the paper's full model plus same-speaker f swapping (so f carries the speaker) and a
# reversed-gradient speaker adversary on mean_t z (weight 30 the best of 1, 30, 100): docs/experiments.md.
DEFAULT_MODEL = dict(f_dim=64, z_dim=32, hidden_dim=256, frame_hidden=256, variant="full")
DEFAULT_OBJECTIVE = dict(kl_warmup_steps=2000, free_bits_z=0.0, f_swap_prob=1.0, adv_weight=30.0,
                         adv_group_size=1)

VOICE_CHANGE = dict(max_pitch=1.5, max_warp=1.2, max_tilt=1.0, max_gain=1.0)

DATA_KINDS = ("speech", "sprites", "balls")


def default_options(data: str) -> tuple[dict, dict]:
    """(model, objective) defaults of a kind of data: the speech model above, the Sprites video model, or the
    bouncing-balls model of the dynamics experiment."""
    if data == "balls":
        from training.balls.data import BALLS_MODEL, BALLS_OBJECTIVE
        return BALLS_MODEL, BALLS_OBJECTIVE
    if data == "sprites":
        from training.sprites.data import SPRITES_MODEL, SPRITES_OBJECTIVE
        return SPRITES_MODEL, SPRITES_OBJECTIVE
    return DEFAULT_MODEL, DEFAULT_OBJECTIVE


def split_model_options(model: dict, objective: dict | None = None) -> tuple[dict, dict]:
    """(architecture, objective options) from a "model" dict that may hold objective keys (old format).

    A key given under both with different values is an error; the architecture part of a checkpoint's
    old model config (which lists adv_weight) gets n_speakers 0 when adv_weight was 0, since only then
    did the old model leave out its adversary head.
    """
    model, objective = dict(model or {}), dict(objective or {})
    moved = {k: model.pop(k) for k in OBJECTIVE_OPTIONS if k in model}
    clash = [k for k in moved if k in objective and objective[k] != moved[k]]
    if clash:
        raise ValueError(f"{clash[0]} is given under both 'model' and 'objective' with different values")
    if "n_speakers" in model and moved and not moved.get("adv_weight", 0.0) > 0:
        model["n_speakers"] = 0
    return model, {**moved, **objective}


def model_config_from_dict(d: dict) -> DSAEConfig:
    """A checkpoint's model config, old format (objective keys included) or new."""
    return DSAEConfig.from_dict(split_model_options(d)[0])


@dataclass
class TrainConfig(Options):
    option_kind: ClassVar[str] = "training"

    features: str = ""
    data: str = "speech"              # speech (a vc-features cache) | sprites (the Sprites render cache) | balls
    out: str = ""
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    lr_schedule: str = "cosine"       # cosine: decay to lr_final_fraction * lr at the last step
    lr_final_fraction: float = 0.1
    lr_warmup_steps: int = 0          # the learning rate rises linearly from lr / N over the first N steps
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
    # Train only the parameters whose names start with these (the rest held fixed): fitting what a model
    # directory does not hold (x_logvar, prior_, speaker_adversary, content_head) before a fine-tune.
    train_only: list = field(default_factory=list)
    # Random voice changes for the z invariance term (training.augment.VoicePerturbation arguments).
    voice_change: dict = field(default_factory=lambda: dict(VOICE_CHANGE))
    # Random level change (nats, uniform +-) of the partner segments that q(f) sees: f learns that
    # loudness and microphone gain do not say who speaks.
    partner_max_gain: float = 0.0
    # The phone recogniser (a training.phones run directory) that the objective's phone_keep_weight uses.
    phone_judge: str = ""
    # The speaker recogniser (a training.speaker_judge run on this cache's train split) of voice_judge_weight.
    speaker_judge: str = ""
    # Only the keys given; the rest come from the data kind's defaults (default_options), then from
    # DSAEConfig's and Objective's own.
    model: dict = field(default_factory=dict)
    objective: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.data not in DATA_KINDS:
            raise ValueError(f"data must be one of {DATA_KINDS}, not {self.data!r}")
        default_model, default_objective = default_options(self.data)
        model, objective = split_model_options(self.model, self.objective)
        self.model = {**default_model, **model}
        self.objective = Objective.from_dict({**default_objective, **objective}).to_dict()
        self.voice_change = {**VOICE_CHANGE, **(self.voice_change or {})}
        reject_unknown_options(self.voice_change, VOICE_CHANGE, "voice_change")
        if self.lr_schedule not in ("cosine", "constant"):
            raise ValueError(f"lr_schedule must be cosine or constant, not {self.lr_schedule!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be auto, cpu or cuda, not {self.device!r}")
        for name in ("epochs", "batch_size", "checkpoint_every", "keep_checkpoints", "threads"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)}")
        if int(self.lr_warmup_steps) < 0:
            raise ValueError(f"lr_warmup_steps must not be negative, not {self.lr_warmup_steps}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, not {self.lr}")
        DSAEConfig.from_dict(self.model)   # validates the model options early



def load_config_file(path: str | os.PathLike) -> dict:
    """A JSON or TOML file with TrainConfig keys (model options under `model`, loss under `objective`)."""
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
