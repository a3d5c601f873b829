"""A frame-level phone recogniser whose frames are what the conversion matches by: what is said.

The DSAE's z holds too little of the phone to pick the target's frames by (issue 20: exemplars matched by
z or by envelope land on other phones). This small network hears phones and not voices: it is trained,
on speakers the evaluation never sees, to spell each utterance's phones with connectionist temporal
classification (CTC). Its per-frame phone posteriors (a phonetic posteriorgram) are then a key that
means the same for every speaker, and `vc` matches the target's frames by it.

CTC's blank spikes: most frames are "no new phone". What the runtime reads is the distribution over the
phones with the blank set aside (`_Exported`), which still says which phone a frame is nearest to. (Frame
labels from an even alignment re-aligned by the model, and CTC without a blank, both collapsed onto one
phone here: docs/experiments.md.)

The network sees only the past and a short future (`PhoneConfig.right_context` frames) and normalises each
frame on its own, so the streaming engine gets a file's keys a hop at a time.

    python -m training.phones train --out runs/phones --epochs 16 --lr 1e-3   # speechocean762 train speakers
    python -m training.phones export runs/phones -o MODEL_DIR                 # MODEL_DIR/phones.onnx
    python -m training.phones targets data/features-mixed data/features-phones --run runs/phones
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

PHONES = ("SIL", "AA", "AE", "AH", "AO", "AW", "AY", "B", "CH", "D", "DH", "EH", "ER", "EY", "F", "G", "HH",
          "IH", "IY", "JH", "K", "L", "M", "N", "NG", "OW", "OY", "P", "R", "S", "SH", "T", "TH", "UH", "UW",
          "V", "W", "Y", "Z", "ZH")
BLANK = len(PHONES)   # CTC's blank, the last output


@dataclass(frozen=True)
class PhoneConfig:
    n_features: int = 200          # the DSAE's log-magnitude bins
    n_mels: int = 40
    sr: int = 16000
    n_fft: int = 400
    channels: int = 192
    embedding: int = 64
    dilations: tuple = (1, 2, 4, 1, 2, 4)
    kernel: int = 3
    right_context: int = 6         # frames of future each output frame depends on

    @property
    def left_context(self) -> int:
        return sum((self.kernel - 1) * d for d in self.dilations) + 2 - self.right_context


def mel_matrix(cfg: PhoneConfig) -> np.ndarray:
    """(n_mels, n_features) triangular mel filters over the bins 1..n_fft/2 (the DC bin is not a feature)."""
    freqs = np.arange(1, cfg.n_features + 1) * cfg.sr / cfg.n_fft
    mel = 2595.0 * np.log10(1.0 + freqs / 700.0)
    edges = np.linspace(2595.0 * np.log10(1.0 + 50.0 / 700.0), mel[-1], cfg.n_mels + 2)
    weights = np.zeros((cfg.n_mels, cfg.n_features), np.float32)
    for i in range(cfg.n_mels):
        low, centre, high = edges[i:i + 3]
        weights[i] = np.clip(np.minimum((mel - low) / (centre - low), (high - mel) / (high - centre)), 0.0, None)
    return weights


class PhoneNet(nn.Module):
    """log-magnitude frames (B, T, n_features) -> embedding (B, T, embedding), phone log-posteriors (B, T, P)."""

    def __init__(self, cfg: PhoneConfig, feature_mean: np.ndarray | None = None, feature_std: np.ndarray | None = None):
        super().__init__()
        self.cfg = cfg
        self.register_buffer("mel", torch.from_numpy(mel_matrix(cfg)))
        self.register_buffer("mean", torch.zeros(cfg.n_mels) if feature_mean is None else torch.as_tensor(feature_mean))
        self.register_buffer("std", torch.ones(cfg.n_mels) if feature_std is None else torch.as_tensor(feature_std))
        self.inp = nn.Conv1d(cfg.n_mels, cfg.channels, 3)
        self.layers = nn.ModuleList(nn.Conv1d(cfg.channels, cfg.channels, cfg.kernel, dilation=d) for d in cfg.dilations)
        # Each frame normalised on its own (over channels, not time), so a stream's frames come out as a file's.
        self.norms = nn.ModuleList(nn.LayerNorm(cfg.channels) for _ in cfg.dilations)
        self.embed = nn.Conv1d(cfg.channels, cfg.embedding, 1)
        self.embed_norm = nn.LayerNorm(cfg.embedding)   # the residual stream grows layer by layer; a tanh here saturated
        self.out = nn.Conv1d(cfg.embedding, len(PHONES) + 1, 1)
        # Split each layer's context into past and future so the whole stack sees right_context frames ahead.
        spans = [2] + [(cfg.kernel - 1) * d for d in cfg.dilations]
        ahead, self.pads = cfg.right_context, []
        for span in spans:
            future = min(span // 2, ahead)
            ahead -= future
            self.pads.append((span - future, future))

    def log_mel(self, frames: torch.Tensor) -> torch.Tensor:
        power = torch.exp(2.0 * frames)
        return (torch.log(power @ self.mel.T + 1e-8) - self.mean) / self.std

    def forward(self, frames: torch.Tensor):
        x = self.log_mel(frames).transpose(1, 2)
        x = F.relu(self.inp(F.pad(x, self.pads[0], mode="replicate")))
        for layer, norm, pad in zip(self.layers, self.norms, self.pads[1:]):
            x = x + F.relu(norm(layer(F.pad(x, pad, mode="replicate")).transpose(1, 2)).transpose(1, 2))
        embedding = self.embed_norm(self.embed(x).transpose(1, 2))
        logits = self.out(embedding.transpose(1, 2)).transpose(1, 2)
        return embedding, torch.log_softmax(logits, dim=-1)


# ------------------------------------------------------------------------------------- data

def read_phone_texts(path: Path) -> dict[str, list[int]]:
    """speechocean762's resource/text-phone ("<utt>.<word> W_B IY0_E" per word) -> utterance: phone ids,
    silence at both ends, stress and word position dropped, consecutive equal phones merged."""
    index = {p: i for i, p in enumerate(PHONES)}
    words: dict[str, list[tuple[int, list[int]]]] = {}
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) < 2:
            continue
        utt, _, word = parts[0].partition(".")
        phones = [index[p.split("_")[0].rstrip("012")] for p in parts[1:]]
        words.setdefault(utt, []).append((int(word or 0), phones))
    out = {}
    for utt, ws in words.items():
        seq = [0] + [p for _, phones in sorted(ws) for p in phones] + [0]
        out[utt] = [p for i, p in enumerate(seq) if i == 0 or p != seq[i - 1]]
    return out


def load_examples(corpus_dir: Path, text_phone: Path, split: str) -> list[tuple[np.ndarray, np.ndarray]]:
    from training.data.corpora import open_corpus
    from vc.audio import read_audio
    from vc.dsp import FeatureConfig, log_magnitude

    phones = read_phone_texts(text_phone)
    cfg = FeatureConfig()
    examples = []
    for utt in open_corpus(corpus_dir).utterances(split):
        if utt.utterance not in phones:
            continue
        frames = log_magnitude(read_audio(utt.path, sr=cfg.sr)[0], cfg=cfg)
        labels = np.asarray(phones[utt.utterance], np.int64)
        if frames.shape[0] >= 2 * labels.size:
            examples.append((frames, labels))
    return examples


def cached_examples(corpus_dir: Path, text_phone: Path, split: str, cache: Path):
    if cache.exists():
        with np.load(cache) as z:
            frames, labels, nf, nl = z["frames"], z["labels"], z["n_frames"], z["n_labels"]
        fo, lo = np.concatenate([[0], np.cumsum(nf)]), np.concatenate([[0], np.cumsum(nl)])
        return [(frames[fo[i]:fo[i + 1]], labels[lo[i]:lo[i + 1]]) for i in range(nf.size)]
    examples = load_examples(corpus_dir, text_phone, split)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, frames=np.concatenate([e[0] for e in examples]), labels=np.concatenate([e[1] for e in examples]),
             n_frames=np.array([e[0].shape[0] for e in examples]), n_labels=np.array([e[1].size for e in examples]))
    return examples


def batches(examples, frames_per_batch: int, rng: np.random.Generator):
    order = rng.permutation(len(examples))
    # similar lengths together, so padding is small
    order = sorted(order, key=lambda i: examples[i][0].shape[0] + rng.uniform(0, 40))
    groups, group, longest = [], [], 0
    for i in order:
        longest = max(longest, examples[i][0].shape[0])
        if group and longest * (len(group) + 1) > frames_per_batch:
            groups.append(group)
            group, longest = [], examples[i][0].shape[0]
        group.append(i)
    if group:
        groups.append(group)
    rng.shuffle(groups)
    return groups


def collate(examples, group, rng: np.random.Generator | None):
    T = max(examples[i][0].shape[0] for i in group)
    x = np.zeros((len(group), T, examples[group[0]][0].shape[1]), np.float32)
    lengths, targets, target_lengths = [], [], []
    for b, i in enumerate(group):
        frames, labels = examples[i]
        if rng is not None:   # loudness and a gentle spectral tilt: neither says which phone it is
            tilt = rng.uniform(-1.0, 1.0) * np.linspace(-0.5, 0.5, frames.shape[1], dtype=np.float32)
            frames = frames + rng.uniform(-1.4, 1.4) + tilt
        x[b, :frames.shape[0]] = frames
        x[b, frames.shape[0]:] = frames[-1]
        lengths.append(frames.shape[0])
        targets.append(labels)
        target_lengths.append(labels.size)
    return (torch.from_numpy(x), torch.tensor(lengths), torch.from_numpy(np.concatenate(targets)),
            torch.tensor(target_lengths))


def loss_of(model, batch):
    """CTC over the utterances' phones, per phone."""
    x, lengths, targets, target_lengths = batch
    _, logp = model(x)
    return F.ctc_loss(logp.transpose(0, 1), targets, lengths, target_lengths, blank=BLANK, reduction="sum",
                      zero_infinity=True) / target_lengths.sum()


def greedy_phone_error(model, examples) -> float:
    """Phone error rate of the best path, repeats merged (edit distance / reference phones)."""
    edits = refs = 0
    with torch.no_grad():
        for frames, labels in examples:
            _, logp = model(torch.from_numpy(frames)[None])
            best = logp[0].argmax(-1).numpy()
            hyp = [p for i, p in enumerate(best) if (i == 0 or p != best[i - 1]) and p != BLANK]
            ref = list(labels)
            d = np.arange(len(hyp) + 1)
            for r in ref:
                prev, d[0] = d.copy(), d[0] + 1
                for j, h in enumerate(hyp, 1):
                    d[j] = min(prev[j] + 1, d[j - 1] + 1, prev[j - 1] + (r != h))
            edits += d[-1]
            refs += len(ref)
    return edits / max(refs, 1)


def train(args) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    text_phone = Path(args.text_phone)
    train_set = cached_examples(Path(args.corpus), text_phone, "train", Path(args.cache) / "phones-train.npz")
    dev_set = cached_examples(Path(args.corpus), text_phone, "dev", Path(args.cache) / "phones-dev.npz")
    print(f"{len(train_set)} train / {len(dev_set)} dev utterances", flush=True)
    cfg = PhoneConfig()
    ckpt_path = out / "checkpoint.pt"
    sample = np.concatenate([e[0] for e in train_set[:400]])
    mel = np.log(np.exp(2.0 * sample.astype(np.float64)) @ mel_matrix(cfg).T + 1e-8)
    model = PhoneNet(cfg, mel.mean(0).astype(np.float32), mel.std(0).astype(np.float32))
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    epoch, history = 0, []
    if ckpt_path.exists():
        state = torch.load(ckpt_path, weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        epoch, history = state["epoch"], json.loads(state["history"])
        print(f"resumed after epoch {epoch}", flush=True)
    rng = np.random.default_rng(epoch)
    last = args.epochs if args.stop_after is None else min(args.stop_after, args.epochs)
    while epoch < last:
        model.train()
        start, total, n = time.perf_counter(), 0.0, 0
        lr = args.lr * 0.5 * (1 + math.cos(math.pi * epoch / args.epochs))
        for group in opt.param_groups:
            group["lr"] = lr
        for group in batches(train_set, args.frames_per_batch, rng):
            loss = loss_of(model, collate(train_set, group, rng))
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            total, n = total + loss.item(), n + 1
        epoch += 1
        model.eval()
        per = greedy_phone_error(model, dev_set[:150])
        history.append({"epoch": epoch, "loss": total / n, "dev_phone_error": per, "seconds": time.perf_counter() - start})
        print(json.dumps(history[-1]), flush=True)
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "epoch": epoch, "history": json.dumps(history),
                    "config": json.dumps(asdict(cfg))}, ckpt_path)


def load_checkpoint(run_dir: Path, what: str, config_class, net_class) -> tuple[nn.Module, dict]:
    """A judge's network from its run directory's checkpoint.pt (tensors only, its config as JSON) and the
    checkpoint itself."""
    path = Path(run_dir) / "checkpoint.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir}: no {what} checkpoint (checkpoint.pt)")
    state = torch.load(path, weights_only=True)
    cfg = config_class(**{k: tuple(v) if isinstance(v, list) else v for k, v in json.loads(state["config"]).items()})
    net = net_class(cfg)
    net.load_state_dict(state["model"])
    return net, state


def load_run(run_dir: Path) -> tuple[PhoneNet, dict]:
    """The trained recogniser of a run directory and its checkpoint (checkpoint.pt, tensors only)."""
    return load_checkpoint(run_dir, "phone recogniser", PhoneConfig, PhoneNet)


class FrozenJudge(nn.Module):
    """A recogniser trained apart from the DSAE, frozen, scoring the DSAE's own normalised frames (the
    objective's judges: PhoneJudge here, training.speaker_judge.SpeakerJudge). Never trained, never saved
    with the model."""

    def __init__(self, net: nn.Module, feature_mean: np.ndarray, feature_std: np.ndarray):
        super().__init__()
        self.net = net.eval().requires_grad_(False)
        self.register_buffer("feature_mean", torch.as_tensor(feature_mean, dtype=torch.float32))
        self.register_buffer("feature_std", torch.as_tensor(feature_std, dtype=torch.float32))

    def train(self, mode: bool = True):
        return super().train(False)     # always the network as trained: no dropout or statistics to update

    def log_magnitude(self, normalised: torch.Tensor) -> torch.Tensor:
        return normalised * self.feature_std + self.feature_mean


class PhoneJudge(FrozenJudge):
    """(B, T, n_features) normalised frames -> (B, T, P) log-probabilities of which phone each frame holds,
    the blank set aside (what `_Exported` gives the runtime). The DSAE's objective asks a converted segment
    to be heard as the same phones as its source."""

    def forward(self, normalised: torch.Tensor) -> torch.Tensor:
        _, logp = self.net(self.log_magnitude(normalised))
        return torch.log_softmax(logp[..., :BLANK], dim=-1)


PHONES_FILE = "phones.onnx"


class _Exported(nn.Module):
    """(1, T, n_features) log-magnitude -> (T, P) phone posteriors: what the runtime matches by."""

    def __init__(self, net: PhoneNet):
        super().__init__()
        self.net = net

    def forward(self, frames):
        _, logp = self.net(frames)
        return torch.softmax(logp[0, :, :BLANK], dim=-1)   # which phone, the blank set aside


def export(run_dir: Path, model_dir: Path) -> Path:
    """Write <model_dir>/phones.onnx from a run's checkpoint."""
    net, state = load_run(run_dir)
    history = json.loads(state["history"])
    return write_phones(net, model_dir, epochs=state["epoch"], dev_phone_error=history[-1]["dev_phone_error"])


def write_phones(net: PhoneNet, model_dir: Path, *, epochs: int = 0, dev_phone_error: float | None = None) -> Path:
    """<model_dir>/phones.onnx from a PhoneNet, with its settings as metadata (`vc.phones` reads them),
    written only once ONNX Runtime agrees with PyTorch."""
    import onnx
    import onnxruntime as ort
    from vc.dsp import FeatureConfig
    from vc.phones import METADATA_KEY, PHONES_FILE

    net.eval()
    cfg = net.cfg
    metadata = {"role": "phones", "phones": list(PHONES), "right_context": cfg.right_context,
                "left_context": cfg.left_context, "feature_config": FeatureConfig().to_dict(), "epochs": epochs,
                "dev_phone_error": None if dev_phone_error is None else round(dev_phone_error, 4),
                "trained_on": "speechocean762 train speakers (data/human), resource/text-phone"}
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    path = model_dir / PHONES_FILE
    raw = model_dir / (PHONES_FILE + ".tmp")
    example = torch.randn(1, 80, cfg.n_features) - 4.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_Exported(net), (example,), str(raw), input_names=["frames"], output_names=["posteriors"],
                          dynamic_axes={"frames": {1: "frames"}, "posteriors": {0: "frames"}}, opset_version=17,
                          do_constant_folding=True, dynamo=False)
    proto = onnx.load(str(raw))
    proto.producer_name = "dsae-vc training.phones"
    onnx.helper.set_model_props(proto, {METADATA_KEY: json.dumps(metadata)})
    onnx.checker.check_model(proto, full_check=True)
    raw.write_bytes(proto.SerializeToString())
    session = ort.InferenceSession(str(raw), providers=["CPUExecutionProvider"])
    test = torch.randn(1, 137, cfg.n_features) - 4.0
    with torch.no_grad():
        expected = _Exported(net)(test).numpy()
    got = session.run(None, {"frames": test.numpy()})[0]
    if not np.allclose(got, expected, atol=1e-4):
        raw.unlink()
        raise SystemExit(f"phones export: ONNX Runtime differs from PyTorch by {np.abs(got - expected).max():.3g}")
    raw.replace(path)
    return path


def write_content_targets(features: Path, out: Path, run_dir: Path, splits=("train", "dev")) -> None:
    """A feature cache whose content targets (training.data.content's layout) are this recogniser's phone
    keys (square-root posteriors, each standardised on the train split): a target that the spectrum around a
    frame does predict, unlike a recogniser encoder's last layer (docs/experiments.md). `out` links to the
    features of `features` and holds its own content files."""
    import csv

    exported = _Exported(load_run(run_dir)[0]).eval()
    features, out = Path(features).resolve(), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name in ("manifest.json", "mean.npy", "std.npy"):
        if not (out / name).exists():
            (out / name).symlink_to(features / name)
    meta = {"format": "dsae-vc-content/2", "source": f"phone keys of {run_dir} (training.phones)",
            "dim": len(PHONES), "splits": {}}
    scale = None
    for split in splits:
        (out / split).mkdir(exist_ok=True)
        for name in ("frames.npy", "segments.npy", "utterances.csv"):
            if not (out / split / name).exists():
                (out / split / name).symlink_to(features / split / name)
        frames = np.load(features / split / "frames.npy", mmap_mode="r")
        keys = np.zeros((frames.shape[0], len(PHONES)), np.float32)
        with open(features / split / "utterances.csv", newline="") as fh:
            for row in csv.DictReader(fh):
                start, n = int(row["frame_start"]), int(row["n_frames"])
                with torch.no_grad():
                    posteriors = exported(torch.from_numpy(np.array(frames[start:start + n], np.float32))[None])
                keys[start:start + n] = np.sqrt(posteriors.numpy())
        if scale is None:
            scale = (keys.mean(axis=0), keys.std(axis=0) + 1e-3)
        np.save(out / split / "content.npy", ((keys - scale[0]) / scale[1]).astype(np.float16))
        meta["splits"][split] = int(frames.shape[0])
        print(f"{split}: {frames.shape[0]} frames", flush=True)
    (out / "content.json").write_text(json.dumps(meta, indent=2))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.phones")
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train")
    t.add_argument("--out", default="runs/phones")
    t.add_argument("--corpus", default="data/human")
    t.add_argument("--text-phone", default="data/src/speechocean762/resource/text-phone")
    t.add_argument("--cache", default="data/cache")
    t.add_argument("--epochs", type=int, default=16, help="the length of the learning-rate schedule")
    t.add_argument("--stop-after", type=int, default=None, metavar="EPOCH",
                   help="end after this epoch, on the schedule of --epochs (the shipped model's judge: 14 of 16)")
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--frames-per-batch", type=int, default=4000)
    t.add_argument("--threads", type=int, default=1)
    e = sub.add_parser("export")
    e.add_argument("run_dir")
    e.add_argument("-o", "--out", required=True, help="the model directory that gets phones.onnx")
    c = sub.add_parser("targets", help="a feature cache with phone keys as the DSAE's content targets")
    c.add_argument("features")
    c.add_argument("out")
    c.add_argument("--run", default="runs/phones")
    args = parser.parse_args(argv)
    if args.command == "train":
        train(args)
    elif args.command == "targets":
        write_content_targets(Path(args.features), Path(args.out), Path(args.run))
    else:
        print(export(Path(args.run_dir), Path(args.out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
