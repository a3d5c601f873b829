"""The judge of the Sprites protocol: a classifier of a sequence's four attributes and its motion.

As in the C-DSVAE protocol, a bi-LSTM runs over per-frame encodings and five heads read its final states:
body, bottomwear, topwear, hair (6 classes each) and motion (9). It is trained on the rendered training
split only and must be near-perfect on the test split (`judge_acc_min`) before its verdicts on generated
sequences mean anything.

Frames are average-pooled to 32x32 before the convolutions: the attributes are colours of regions several
pixels wide and the motions are whole-body poses, both intact at half resolution, and the judge then costs
a few minutes of one core to train.

`FrameJudge` is the DSAE paper's own judge, for its quantitative table (`evaluate.paper_table`): the same
convolutions, but the heads read each frame alone, so it gives class probabilities per frame and can follow
a generated sequence over time (the trajectory figures). It is trained on every labelled frame of the
training split (each frame carries its sequence's attributes and motion).
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from training.data import sprites
from training.sprites.video import IMAGE_SHAPE

HEADS = ("body", "bottom", "top", "hair", "motion")
N_CLASSES = (6, 6, 6, 6, sprites.N_MOTIONS)
WEIGHTS = "judge.safetensors"
CARD = "judge.json"


@dataclass
class JudgeConfig:
    width: int = 16
    frame_dim: int = 128
    hidden: int = 64


def _frame_stack(config: JudgeConfig) -> nn.Sequential:
    """(N, 3, 64, 64) frames -> (N, frame_dim) encodings, each frame on its own."""
    w = config.width
    return nn.Sequential(
        nn.AvgPool2d(2),
        nn.Conv2d(3, w, 4, 2, 1), nn.LeakyReLU(0.2),
        nn.Conv2d(w, 2 * w, 4, 2, 1), nn.LeakyReLU(0.2),
        nn.Conv2d(2 * w, 4 * w, 4, 2, 1), nn.LeakyReLU(0.2),
        nn.Flatten(), nn.Linear(4 * w * 16, config.frame_dim), nn.LeakyReLU(0.2))


class SpritesJudge(nn.Module):
    """x (B, T, 12288) flattened CHW frames in [0, 1] -> logits per head (B, classes)."""

    kind = "sequence"

    def __init__(self, config: JudgeConfig = JudgeConfig()):
        super().__init__()
        self.config = config
        self.frames = _frame_stack(config)
        self.lstm = nn.LSTM(config.frame_dim, config.hidden, batch_first=True, bidirectional=True)
        self.heads = nn.ModuleList(nn.Linear(2 * config.hidden, n) for n in N_CLASSES)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        b, t = x.shape[:2]
        h = self.frames(x.reshape(b * t, *IMAGE_SHAPE)).reshape(b, t, -1)
        _, (h_n, _) = self.lstm(h)
        state = torch.cat([h_n[0], h_n[1]], dim=-1)
        return [head(state) for head in self.heads]

    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor, batch_size: int = 256) -> list[np.ndarray]:
        """Class probabilities per head, (N, classes) each, for a (N, T, 12288) tensor."""
        outs = [[] for _ in HEADS]
        for i in range(0, len(x), batch_size):
            for k, logits in enumerate(self(x[i:i + batch_size])):
                outs[k].append(F.softmax(logits, dim=-1).numpy())
        return [np.concatenate(o) for o in outs]


class FrameJudge(nn.Module):
    """x (B, T, 12288) flattened CHW frames in [0, 1] -> logits per head (B, T, classes), frame by frame."""

    kind = "frame"

    def __init__(self, config: JudgeConfig = JudgeConfig()):
        super().__init__()
        self.config = config
        self.frames = _frame_stack(config)
        self.heads = nn.ModuleList(nn.Linear(config.frame_dim, n) for n in N_CLASSES)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        lead = x.shape[:-1]
        h = self.frames(x.reshape(-1, *IMAGE_SHAPE))
        return [head(h).reshape(*lead, -1) for head in self.heads]

    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor, batch_size: int = 64) -> list[np.ndarray]:
        """Class probabilities per head, (N, T, classes) float64, for a (N, T, 12288) tensor.

        Computed from log-softmax in float64: the paper's KL-random reads the probabilities the judge
        gives the wrong classes, around 1e-6 to 1e-8, which a float32 softmax rounds coarsely or to zero.
        """
        outs = [[] for _ in HEADS]
        for i in range(0, len(x), batch_size):
            for k, logits in enumerate(self(x[i:i + batch_size])):
                outs[k].append(F.log_softmax(logits.double(), dim=-1).exp().numpy())
        return [np.concatenate(o) for o in outs]


JUDGES = {cls.kind: cls for cls in (SpritesJudge, FrameJudge)}


def _judge_loss(logits: list[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy summed over heads; a frame judge's every frame carries its sequence's labels."""
    total = 0.0
    for k, head_logits in enumerate(logits):
        per_seq = head_logits.numel() // (head_logits.shape[-1] * len(labels))
        total = total + F.cross_entropy(head_logits.reshape(-1, head_logits.shape[-1]),
                                        labels[:, k].repeat_interleave(per_seq))
    return total


def labels_of(data) -> np.ndarray:
    """(N, 5) int64: body, bottom, top, hair, motion."""
    attrs = np.array([sprites.character_attributes(int(c)) for c in data.characters], dtype=np.int64)
    return np.concatenate([attrs, np.asarray(data.motions, dtype=np.int64)[:, None]], axis=1)


def judge_accuracy(judge: SpritesJudge | FrameJudge, data, batch_size: int = 256, *,
                   prefix: str = "judge_acc") -> dict:
    """Test accuracy of each head on a SpritesDataset-like object (frames, characters, motions); a frame
    judge is scored on every frame."""
    from training.sprites.video import frames_to_features
    truth = labels_of(data)
    hits, count = np.zeros(len(HEADS)), 0
    judge.eval()
    for i in range(0, len(truth), batch_size):
        x = torch.from_numpy(frames_to_features(data.frames[i:i + batch_size]))
        probs = judge.predict_proba(x)
        labels = truth[i:i + batch_size]
        # (B,) labels against (B,) or (B, T) predictions
        hits += [np.sum(p.argmax(-1) == labels[:, k].reshape(-1, *[1] * (p.ndim - 2))) for k, p in enumerate(probs)]
        count += probs[0][..., 0].size
    acc = {f"{prefix}_{name}": float(h / count) for name, h in zip(HEADS, hits)}
    acc[f"{prefix}_min"] = min(acc.values())
    return acc


def train_judge(cache_dir: str, out_dir: str, *, epochs: int = 3, batch_size: int = 32, lr: float = 2e-3,
                seed: int = 0, threads: int = 1, kind: str = "sequence", log=print) -> dict:
    """Train on the training split, measure on the test split, write judge.safetensors + judge.json.

    kind: "sequence" (`SpritesJudge`, the protocol of the later papers) or "frame" (`FrameJudge`, the DSAE
    paper's); batch_size counts sequences either way.
    """
    from safetensors.torch import save_file

    from training.sprites.data import SpritesDataset
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    train_set, test_set = SpritesDataset(cache_dir, "train"), SpritesDataset(cache_dir, "test")
    truth = torch.from_numpy(labels_of(train_set))
    if kind not in JUDGES:
        raise ValueError(f"judge kind {kind!r}: expected one of {sorted(JUDGES)}")
    judge = JUDGES[kind]()
    optimizer = torch.optim.Adam(judge.parameters(), lr=lr)
    rng = np.random.default_rng(seed)
    steps = epochs * (len(train_set) // batch_size)
    started, step = time.perf_counter(), 0
    for epoch in range(epochs):
        order = rng.permutation(len(train_set))
        for i in range(0, len(order) - batch_size + 1, batch_size):
            idx = np.sort(order[i:i + batch_size])
            x = torch.from_numpy(train_set.batch(idx))
            for group in optimizer.param_groups:          # linear decay to a tenth
                group["lr"] = lr * (1.0 - 0.9 * step / steps)
            loss = _judge_loss(judge(x), truth[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            if step % 50 == 0:
                log(f"judge step {step}/{steps}: loss {loss.item():.4f} ({time.perf_counter() - started:.0f} s)")
    accuracy = judge_accuracy(judge, test_set)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in judge.state_dict().items()}, out / WEIGHTS)
    card = {"kind": kind, "config": asdict(judge.config), "epochs": epochs, "batch_size": batch_size, "lr": lr,
            "seed": seed, "train_time_s": round(time.perf_counter() - started, 1), "test": accuracy}
    (out / CARD).write_text(json.dumps(card, indent=1))
    log(f"judge test accuracy: {json.dumps(accuracy)}")
    return card


def load_judge(directory: str | Path, *, kind: str = "sequence") -> SpritesJudge | FrameJudge:
    """The judge saved in directory; it must be of the kind asked for (a card without one is a sequence
    judge, as v1's)."""
    from safetensors.torch import load_file
    directory = Path(directory)
    for name in (WEIGHTS, CARD):
        if not (directory / name).is_file():
            raise ValueError(f"{directory / name}: no such file (train a judge with tools/train_sprites_judge.py)")
    try:
        card = json.loads((directory / CARD).read_text())
        saved = card.get("kind", "sequence")
        judge = JUDGES[saved](JudgeConfig(**card["config"]))
        judge.load_state_dict(load_file(directory / WEIGHTS))
    except (ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise ValueError(f"{directory}: not a Sprites judge ({exc})") from None
    if saved != kind:
        raise ValueError(f"{directory}: a {saved} judge, where a {kind} judge is needed")
    return judge.eval()
