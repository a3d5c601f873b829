"""The paper's trajectory plots: 200 sequences generated with one code shared and the other sampled, judged
frame by frame by the paper's classifier (`FrameJudge`).

* shared f: f is the posterior mean of one test sequence and z_1:T is drawn from the learned prior
  p(z_t | z_<t) (the LSTM fed its own samples): a disentangled model holds the static attributes and lets
  the action vary;
* shared z: z_1:T is the posterior mean of the same sequence and f is drawn from N(0, I): the static
  attributes vary and the action stays nearly constant.

Each frame's class probabilities are drawn in a regular polygon with one vertex per class: a probability
vector maps to the probability-weighted mean of the vertices, so a sure prediction sits on its vertex and a
hesitant one inside, between the classes it hesitates over. A sequence is a line through its T frames.
Below each polygon, the share of the sequences judged as each class at each time step, since many frames
land on the same vertex and a line plot alone hides how many.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from training.data import sprites
from training.sprites.evaluate import PAPER_NAMES
from training.sprites.judge import HEADS, FrameJudge, labels_of
from training.sprites.video import frames_to_features

N_SEQUENCES = 200
_MOTIONS = tuple(f"{a} {d}" for a in sprites.ACTIONS for d in sprites.DIRECTIONS)   # label 3 * action + direction
CLASS_NAMES = {
    "body": ("light", "neutral", "dark-gray", "gray", "brown", "black"),
    "bottom": ("white", "yellow", "red", "gray", "shade-green", "green"),
    "top": ("red", "blue", "white", "gray", "brown", "white-tie"),
    "hair": ("green", "blue", "orange", "white", "red", "purple"),
    "motion": _MOTIONS,
}


@torch.no_grad()
def shared_code_probs(model, judge: FrameJudge, test, *, n: int = N_SEQUENCES, seed: int = 0) -> dict:
    """Judge probabilities, per head (n, T, classes), of n sequences sharing f and of n sharing z_1:T.

    Both share the codes of one test sequence picked with the seed (`source`, its labels `truth`).
    """
    model.eval()
    judge.eval()
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    source = int(rng.integers(len(test)))
    f, _, z, _ = model.encode(torch.from_numpy(frames_to_features(test.frames[[source]])))
    shared_f = model.generate(n, z.shape[1], f=f.expand(n, -1))
    shared_z = model.decode(torch.randn(n, model.config.f_dim), z.expand(n, -1, -1))
    return {"source": source, "truth": labels_of(test)[source],
            "shared_f": judge.predict_proba(shared_f), "shared_z": judge.predict_proba(shared_z)}


def source_shares(trajectories: dict) -> dict:
    """Per condition and attribute, the fraction of generated frames judged as the source sequence's class:
    near 1 for what the shared code holds, lower for what the sampled code varies."""
    out = {}
    for condition in ("shared_f", "shared_z"):
        for name, head in PAPER_NAMES.items():
            k = HEADS.index(head)
            hit = trajectories[condition][k].argmax(-1) == trajectories["truth"][k]
            out[f"traj_{condition}_source_{name}"] = float(hit.mean())
    return out


def polygon_points(probs: np.ndarray) -> np.ndarray:
    """(..., classes) probabilities -> (..., 2): the probability-weighted mean of a regular polygon's
    vertices, class 0 at the top, the others clockwise."""
    angle = 2 * np.pi * np.arange(probs.shape[-1]) / probs.shape[-1]
    vertices = np.stack([np.sin(angle), np.cos(angle)], axis=1)
    return probs @ vertices


def _polygon_panel(ax, probs: np.ndarray, names, source: int):
    from matplotlib.collections import LineCollection
    points = polygon_points(probs)
    corners = polygon_points(np.eye(len(names)))
    ax.fill(*corners.T, facecolor="0.95", edgecolor="0.6", linewidth=0.8)
    ax.add_collection(LineCollection(list(points), colors="tab:blue", alpha=0.08, linewidths=0.8))
    ax.scatter(*points.reshape(-1, 2).T, c=np.tile(np.arange(points.shape[1]), len(points)), cmap="viridis",
               s=6, alpha=0.5, linewidths=0)
    ax.scatter(*corners[source], s=220, facecolors="none", edgecolors="tab:red", linewidths=1.5)
    for k, (x, y) in enumerate(corners):
        ax.text(1.3 * x, 1.2 * y, names[k], ha="center", va="center", fontsize=7,
                color="tab:red" if k == source else "0.2")
    ax.set_xlim(-1.65, 1.65)
    ax.set_ylim(-1.4, 1.4)
    ax.set_aspect("equal")
    ax.axis("off")


def _class_colours(n: int, source: int) -> list:
    """The source's class in red, as its ring in the polygon; the others in the remaining tab10 colours."""
    from matplotlib import colormaps
    others = iter(colormaps["tab10"](k) for k in range(10) if k != 3)       # 3 is tab10's red
    return ["tab:red" if k == source else next(others) for k in range(n)]


def _share_panel(ax, probs: np.ndarray, names, source: int):
    predicted = probs.argmax(-1)                                    # (n, T)
    steps = np.arange(1, predicted.shape[1] + 1)
    bottom = np.zeros(len(steps))
    for k, (name, colour) in enumerate(zip(names, _class_colours(len(names), source))):
        share = (predicted == k).mean(0)
        ax.bar(steps, share, bottom=bottom, color=colour, width=0.8,
               label=name + (" (source)" if k == source else ""), edgecolor="white", linewidth=0.3)
        bottom += share
    ax.set_xticks(steps)
    ax.set_ylim(0, 1)
    ax.set_xlabel("frame t")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3, frameon=False,
              handlelength=1, columnspacing=0.8)


def plot_trajectories(trajectories: dict, condition: str, path: str | Path, *, title: str) -> Path:
    """One figure per condition: per attribute, the polygon of frame predictions over the class share."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    probs, truth = trajectories[condition], trajectories["truth"]
    fig, axes = plt.subplots(2, len(PAPER_NAMES), figsize=(3.6 * len(PAPER_NAMES), 7.4),
                             gridspec_kw={"height_ratios": [1.2, 1]})
    shares = source_shares(trajectories)
    for col, (name, head) in enumerate(PAPER_NAMES.items()):
        k = HEADS.index(head)
        names = CLASS_NAMES[head]
        _polygon_panel(axes[0, col], probs[k], names, int(truth[k]))
        axes[0, col].set_title(f"{name}: {shares[f'traj_{condition}_source_{name}']:.0%} of frames judged "
                               f"{names[int(truth[k])]}", fontsize=8)
        _share_panel(axes[1, col], probs[k], names, int(truth[k]))
    axes[1, 0].set_ylabel(f"share of the {len(probs[0])} sequences")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_trajectory_figures(trajectories: dict, out_dir: str | Path) -> list[Path]:
    n = len(trajectories["shared_f"][0])
    src = f"test sequence {trajectories['source']}"
    return [
        plot_trajectories(trajectories, "shared_f", Path(out_dir) / "trajectories_shared_f.png",
                          title=f"{n} sequences sharing f ({src}), z_1:T from the learned prior: the judge's "
                                "prediction per frame (red: the source's class; dots coloured by frame t)"),
        plot_trajectories(trajectories, "shared_z", Path(out_dir) / "trajectories_shared_z.png",
                          title=f"{n} sequences sharing z_1:T ({src}), f from N(0, I): the judge's prediction "
                                "per frame (red: the source's class; dots coloured by frame t)"),
    ]
