"""The Sprites measures of the DSAE paper and its successors (S3VAE, C-DSVAE), judged by `SpritesJudge`.

On every test sequence (296 characters x 9 motions), with codes from the model's posterior means:
  * fixed z, f sampled from the prior, decoded: does the judge see the sequence's motion? (`acc_motion`),
    and the inception score, H(y|x) and H(y) of its motion predictions on those generations;
  * fixed f, z sampled from the LSTM prior, decoded: does it see the character's attributes? (`acc_body`,
    `acc_bottom`, `acc_top`, `acc_hair`);
  * swap: f of sequence A with z of a sequence B of another character and another motion: A's attributes
    (`swap_acc_attributes`, the mean over the four) and B's motion (`swap_acc_motion`);
  * reconstructions (f and z of the same sequence), a check that the decoder draws what the judge reads;
  * the judge itself on the real test sequences (`judge_acc_*`, `judge_acc_min`).

`paper_table` is the DSAE paper's own quantitative table (its slides, "Quantitative analysis"): a classifier
trained on labelled frames (`FrameJudge`) gives class probabilities for every frame of a test sequence,
p_data, and for the same frame of its reconstruction, p_recon; per attribute (skin, pants, tops, hair,
action), averaged over all frames of the test split:
  * disagreement: the fraction of frames where argmax p_recon != argmax p_data;
  * KL-recon: KL[p_recon || p_data];
  * KL-random: KL[p_random || p_data], p_random uniform over the classes: a scale for KL-recon, what a
    reconstruction carrying no information about the attribute would score. It is large when the judge is
    sure of the data (the wrong classes get tiny probabilities, and the uniform puts mass on them).
"""
from __future__ import annotations

import numpy as np
import torch

from training.sprites.judge import HEADS, FrameJudge, SpritesJudge, judge_accuracy, labels_of
from training.sprites.video import frames_to_features

ATTRIBUTE_HEADS = HEADS[:4]
# The paper's names for the judge's heads, in the order of its table.
PAPER_NAMES = {"skin": "body", "pants": "bottom", "tops": "top", "hair": "hair", "action": "motion"}
# Probabilities are clipped here before any logarithm: a judge's softmax can reach exact zeros, where KL is
# infinite. The paper's KL-random (8.9 nats for 6 classes) implies wrong-class probabilities near 3e-6, far
# above this floor, so the clip bounds the measure (KL-random at most 21.2 nats for 6 classes, 22.4 for 9)
# without shaping it.
PROB_FLOOR = 1e-12
TABLE_MEASURES = ("disagreement", "kl_recon", "kl_random")


def load_sprites_model(path):
    """A Sprites DSAE from a vc-train run directory (latest checkpoint) or a checkpoint directory."""
    from pathlib import Path

    from training.checkpoints import load_model
    from training.config import TrainingError
    path = Path(path)
    try:
        if (path / "model.safetensors").is_file() and (path / "state.json").is_file():
            model, _ = load_model(path, path)
        else:
            model, _ = load_model(path)
    except (TrainingError, OSError, KeyError) as exc:
        raise ValueError(f"{path}: cannot load a model ({exc})") from None
    if model.config.frame_coder != "conv64":
        raise ValueError(f"{path}: not a Sprites model (frame coder {model.config.frame_coder!r})")
    return model.eval()


def _batches(n: int, size: int):
    for i in range(0, n, size):
        yield slice(i, min(n, i + size))


def _clip(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), PROB_FLOOR, 1.0)
    return p / p.sum(-1, keepdims=True)


def kl_divergence(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """KL[p || q] in nats over the last axis, both clipped to PROB_FLOOR and renormalised."""
    p, q = _clip(p), _clip(q)
    return (p * (np.log(p) - np.log(q))).sum(-1)


def disagreement(p_gen: np.ndarray, p_data: np.ndarray) -> float:
    """Fraction of frames whose most probable class differs between generated and data frames."""
    return float(np.mean(p_gen.argmax(-1) != p_data.argmax(-1)))


def table_row(p_gen: np.ndarray, p_data: np.ndarray) -> dict:
    """The paper's three numbers for one attribute: class probabilities (..., classes) of the same frames."""
    p_random = np.full_like(p_data, 1.0 / p_data.shape[-1], dtype=np.float64)
    return {"disagreement": disagreement(p_gen, p_data), "kl_recon": float(kl_divergence(p_gen, p_data).mean()),
            "kl_random": float(kl_divergence(p_random, p_data).mean())}


def motion_scores(probs: np.ndarray) -> dict:
    """Inception score, H(y|x) and H(y) (nats) of class probabilities (N, classes)."""
    eps = 1e-12
    marginal = probs.mean(0)
    h_cond = float(-(probs * np.log(probs + eps)).sum(1).mean())
    h_marg = float(-(marginal * np.log(marginal + eps)).sum())
    kl = (probs * (np.log(probs + eps) - np.log(marginal + eps))).sum(1)
    return {"inception_score": float(np.exp(kl.mean())), "h_y_given_x": h_cond, "h_y": h_marg}


def swap_partners(characters: np.ndarray, motions: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """For each sequence, a random one of another character and another motion."""
    n = len(characters)
    partner = rng.integers(0, n, size=n)
    bad = (characters[partner] == characters) | (motions[partner] == motions)
    while bad.any():
        partner[bad] = rng.integers(0, n, size=int(bad.sum()))
        bad = (characters[partner] == characters) | (motions[partner] == motions)
    return partner


@torch.no_grad()
def posterior_means(model, frames, *, batch_size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """f (N, f_dim) and z (N, T, z_dim) posterior means of (N, T, 64, 64, 3) uint8 sequences."""
    n = len(frames)
    f_mean = np.zeros((n, model.config.f_dim), np.float32)
    z_mean = np.zeros((n, frames.shape[1], model.config.z_dim), np.float32)
    for s in _batches(n, batch_size):
        f, _, z, _ = model.encode(torch.from_numpy(frames_to_features(frames[s])))
        f_mean[s], z_mean[s] = f.numpy(), z.numpy()
    return f_mean, z_mean


@torch.no_grad()
def paper_table(model, judge: FrameJudge, test, *, batch_size: int = 128) -> dict:
    """The paper's table on every test sequence: `disagreement_<attr>`, `kl_recon_<attr>`, `kl_random_<attr>`
    for attr in skin, pants, tops, hair, action, plus the frame judge's accuracy on the data frames
    (`frame_judge_acc_*`), without which the table means little.

    Reconstructions decode the posterior means of f and z, as the other measures do; every frame weighs
    the same in the means.
    """
    model.eval()
    judge.eval()
    truth = labels_of(test)
    sums = {name: np.zeros(len(TABLE_MEASURES)) for name in PAPER_NAMES}
    hits, n_frames = np.zeros(len(HEADS)), 0
    for s in _batches(len(truth), batch_size):
        x = torch.from_numpy(frames_to_features(test.frames[s]))
        f, _, z, _ = model.encode(x)
        p_data, p_recon = judge.predict_proba(x), judge.predict_proba(model.decode(f, z))
        frames = p_data[0][..., 0].size
        for name, head in PAPER_NAMES.items():
            k = HEADS.index(head)
            row = table_row(p_recon[k], p_data[k])
            sums[name] += frames * np.array([row[m] for m in TABLE_MEASURES])
            hits[k] += np.sum(p_data[k].argmax(-1) == truth[s, k][:, None])
        n_frames += frames
    out = {}
    for i, measure in enumerate(TABLE_MEASURES):
        out.update({f"{measure}_{name}": float(sums[name][i] / n_frames) for name in PAPER_NAMES})
    out.update({f"frame_judge_acc_{head}": float(hits[k] / n_frames) for k, head in enumerate(HEADS)})
    out["n_test_frames"] = n_frames
    return out


@torch.no_grad()
def evaluate_sprites(model, judge: SpritesJudge, test, *, seed: int = 0, batch_size: int = 128) -> dict:
    """All measures on a SpritesDataset-like test set (frames, characters, motions); see the module doc."""
    model.eval()
    judge.eval()
    truth = labels_of(test)
    n = len(truth)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    f_mean, z_mean = posterior_means(model, test.frames, batch_size=batch_size)

    partner = swap_partners(np.asarray(test.characters), np.asarray(test.motions), rng)
    probs = {k: [[] for _ in HEADS] for k in ("fixed_z", "fixed_f", "swap", "recon")}
    for s in _batches(n, batch_size):
        f, z = torch.from_numpy(f_mean[s]), torch.from_numpy(z_mean[s])
        videos = {
            "fixed_z": model.decode(torch.randn_like(f), z),
            "fixed_f": model.generate(len(f), z.shape[1], f=f),
            "swap": model.decode(f, torch.from_numpy(z_mean[partner[s]])),
            "recon": model.decode(f, z),
        }
        for kind, x in videos.items():
            for k, p in enumerate(judge.predict_proba(x)):
                probs[kind][k].append(p)
    probs = {kind: [np.concatenate(p) for p in per_head] for kind, per_head in probs.items()}

    def acc(kind, head, labels):
        return float(np.mean(probs[kind][HEADS.index(head)].argmax(1) == labels))

    out = {"acc_motion": acc("fixed_z", "motion", truth[:, 4])}
    for k, head in enumerate(ATTRIBUTE_HEADS):
        out[f"acc_{head}"] = acc("fixed_f", head, truth[:, k])
    out.update(motion_scores(probs["fixed_z"][HEADS.index("motion")]))
    swap_attr = [acc("swap", head, truth[:, k]) for k, head in enumerate(ATTRIBUTE_HEADS)]
    out["swap_acc_attributes"] = float(np.mean(swap_attr))
    out["swap_acc_motion"] = acc("swap", "motion", truth[partner, 4])
    out.update({f"swap_acc_{head}": a for head, a in zip(ATTRIBUTE_HEADS, swap_attr)})
    out.update({f"recon_acc_{head}": acc("recon", head, truth[:, k]) for k, head in enumerate(HEADS)})
    out.update(judge_accuracy(judge, test))
    out["n_test_sequences"] = n
    return out
