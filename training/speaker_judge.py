"""A speaker recogniser on the DSAE's own frames, the judge of the objective's `voice_judge_weight`.

The runtime reaches the target's voice mostly through the target's own frames (the envelope exemplars),
which cost words; the decoder given the target's code sounds only a little like the target to an outside
speaker network (docs/experiments.md, stop 33: Resemblyzer's margin 0.093 without the exemplars, 0.144
with). The voice-reach term asks the DSAE's own f encoder, which the decoder can satisfy by what that
encoder reads. This network is another listener: trained apart from the DSAE, on the training speakers'
200 ms segments, to tell who speaks from log-mel frames (loudness and tilt randomised, so neither says
who), then frozen. The objective asks that a segment decoded with another segment's code be heard as that
other segment's speaker.

    python -m training.speaker_judge train --features data/features-mixed --out runs/speakers
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from training.phones import FrozenJudge, PhoneConfig, load_checkpoint, mel_matrix

CHECKPOINT = "checkpoint.pt"   # the same file as a phone recogniser run's (training.phones.load_checkpoint)


@dataclass(frozen=True)
class SpeakerConfig:
    n_features: int = 200
    n_mels: int = 40
    channels: int = 256
    embedding: int = 128
    dilations: tuple = (1, 2, 3)
    n_speakers: int = 0
    # > 0: the judge hears each frame's envelope only, its first this many DCT coefficients (vc.exemplars'
    # N_COEFFS is what the runtime keeps of a decoded frame; the harmonics are rebuilt), not its harmonics.
    envelope_coeffs: int = 0


class SpeakerNet(nn.Module):
    """log-magnitude frames (B, T, n_features) -> speaker log-probabilities (B, n_speakers): dilated
    convolutions over log-mel frames, the mean and spread over time, an embedding, a softmax classifier."""

    def __init__(self, cfg: SpeakerConfig):
        super().__init__()
        self.cfg = cfg
        mel_cfg = PhoneConfig(n_features=cfg.n_features, n_mels=cfg.n_mels)
        self.register_buffer("mel", torch.from_numpy(mel_matrix(mel_cfg)))
        self.register_buffer("mean", torch.zeros(cfg.n_mels))
        self.register_buffer("std", torch.ones(cfg.n_mels))
        if cfg.envelope_coeffs > 0:
            from vc.exemplars import dct_basis
            basis = torch.from_numpy(dct_basis(cfg.n_features, cfg.envelope_coeffs))
            self.register_buffer("lifter", basis @ basis.T)
        else:
            self.lifter = None
        self.inp = nn.Conv1d(cfg.n_mels, cfg.channels, 3, padding=1)
        self.layers = nn.ModuleList(nn.Conv1d(cfg.channels, cfg.channels, 3, dilation=d, padding=d)
                                    for d in cfg.dilations)
        self.norms = nn.ModuleList(nn.BatchNorm1d(cfg.channels) for _ in cfg.dilations)
        self.embed = nn.Sequential(nn.Linear(2 * cfg.channels, cfg.embedding), nn.LayerNorm(cfg.embedding))
        self.out = nn.Linear(cfg.embedding, cfg.n_speakers)

    def log_mel(self, frames: torch.Tensor) -> torch.Tensor:
        if self.lifter is not None:
            frames = frames @ self.lifter
        power = torch.exp(2.0 * frames)
        return (torch.log(power @ self.mel.T + 1e-8) - self.mean) / self.std

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.inp(self.log_mel(frames).transpose(1, 2)))
        for layer, norm in zip(self.layers, self.norms):
            x = x + F.relu(norm(layer(x)))
        pooled = torch.cat([x.mean(2), x.std(2)], dim=1)
        return torch.log_softmax(self.out(self.embed(pooled)), dim=-1)


def _augment(frames: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random level (+-12 dB) and spectral tilt per segment: neither says who speaks."""
    n = frames.shape[0]
    level = rng.uniform(-1.4, 1.4, size=(n, 1, 1)).astype(np.float32)
    tilt = rng.uniform(-1.0, 1.0, size=(n, 1, 1)).astype(np.float32) * np.linspace(
        -0.5, 0.5, frames.shape[2], dtype=np.float32)
    return frames + level + tilt


def train(args) -> None:
    from training.dataset import SegmentDataset
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = SegmentDataset(args.features, "train")
    # The held-out splits are other speakers: every 25th utterance of the train split checks the judge instead.
    held = data.segment_utterance % 25 == 0
    train_idx, held_idx = np.flatnonzero(~held), np.flatnonzero(held)
    raw = lambda ds, idx: ds.batch(idx) * ds.std + ds.mean           # the judge reads log-magnitudes
    cfg = SpeakerConfig(n_features=data.feature_dim, n_speakers=len(data.speakers), envelope_coeffs=args.envelope_coeffs)
    net = SpeakerNet(cfg)
    rng = np.random.default_rng(0)
    sample = raw(data, rng.choice(len(data), min(len(data), 2000), replace=False)).reshape(-1, data.feature_dim)
    with torch.no_grad():
        mel = net.log_mel(torch.from_numpy(sample.astype(np.float32)))
    net.mean.copy_(mel.mean(0))
    net.std.copy_(mel.std(0))
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    epoch, history = 0, []
    if (out / CHECKPOINT).exists():
        state = torch.load(out / CHECKPOINT, weights_only=True)
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        epoch, history = state["epoch"], json.loads(state["history"])
        print(f"resumed after epoch {epoch}", flush=True)
    steps = train_idx.size // args.batch_size
    while epoch < args.epochs:
        net.train()
        rng = np.random.default_rng([0, epoch])
        order = rng.permutation(train_idx)
        start, total, correct = time.perf_counter(), 0.0, 0
        for step in range(steps):
            lr = args.lr * 0.5 * (1 + math.cos(math.pi * (epoch + step / steps) / args.epochs))
            for group in opt.param_groups:
                group["lr"] = lr
            idx = order[step * args.batch_size:(step + 1) * args.batch_size]
            x = torch.from_numpy(_augment(raw(data, idx), rng))
            y = torch.from_numpy(data.segment_speaker[idx].astype(np.int64))
            logp = net(x)
            loss = F.nll_loss(logp, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item()
            correct += int((logp.argmax(1) == y).sum())
        epoch += 1
        row = {"epoch": epoch, "loss": total / steps, "train_accuracy": correct / (steps * args.batch_size),
               "seconds": round(time.perf_counter() - start, 1)}
        row["held_out_accuracy"] = accuracy(net, data, raw, held_idx)
        history.append(row)
        print(json.dumps(row), flush=True)
        torch.save({"model": net.state_dict(), "opt": opt.state_dict(), "epoch": epoch, "history": json.dumps(history),
                    "config": json.dumps(asdict(cfg)), "speakers": json.dumps(list(data.speakers))}, out / CHECKPOINT)


@torch.no_grad()
def accuracy(net: SpeakerNet, data, raw, idx: np.ndarray, max_segments: int = 8192) -> float:
    """Share of the segments `idx` (utterances never trained on) heard as their speaker."""
    idx = idx[np.linspace(0, idx.size - 1, min(idx.size, max_segments)).astype(int)]
    net.eval()
    logp = torch.cat([net(torch.from_numpy(raw(data, idx[i:i + 512]))) for i in range(0, idx.size, 512)])
    return float((logp.argmax(1).numpy() == data.segment_speaker[idx]).mean())


def load_run(run_dir: str | Path) -> tuple[SpeakerNet, list[str]]:
    """The trained judge of a run directory and the training speakers its outputs name, in order."""
    net, state = load_checkpoint(Path(run_dir), "speaker recogniser", SpeakerConfig, SpeakerNet)
    return net, json.loads(state["speakers"])


class SpeakerJudge(FrozenJudge):
    """(B, T, n_features) normalised frames -> (B, n_speakers) log-probabilities of the training speakers."""

    def forward(self, normalised: torch.Tensor) -> torch.Tensor:
        return self.net(self.log_magnitude(normalised))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.speaker_judge", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train the speaker recogniser on a feature cache's train speakers")
    t.add_argument("--features", required=True, help="a vc-features cache (its train split names the speakers)")
    t.add_argument("--out", default="runs/speakers")
    t.add_argument("--epochs", type=int, default=4)
    t.add_argument("--batch-size", type=int, default=256)
    t.add_argument("--lr", type=float, default=2e-3)
    t.add_argument("--threads", type=int, default=1)
    t.add_argument("--envelope-coeffs", type=int, default=0, metavar="N",
                   help="hear only each frame's envelope, its first N DCT coefficients (48: what the runtime keeps)")
    args = p.parse_args(argv)
    try:
        train(args)
    except (OSError, ValueError) as exc:
        print(f"speaker_judge: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
