"""Stochastic versus deterministic dynamics (the DSAE paper's comparison): missing-frame prediction on
bouncing balls, scored by the fraction of incorrect pixels (training.balls.predict).

    python tools/eval_dynamics.py [--runs runs/dyn-stochastic runs/dyn-lstm_f runs/dyn-lstm_c]
                                  [--cache data/balls] [--sequences 300] [--samples 8] [--seed 0]
                                  [--figure docs/figures/dynamics.png] [--json] [--out FILE.json]

Each --runs entry is a vc-train run directory (its latest checkpoint) trained with `--data balls`; its
model is named by its `dynamics` option (stochastic, lstm_f, lstm_c). The test split's first --sequences
videos are used. JSON: `reconstruction` {model: fraction} with all 40 frames seen; `incorrect_pixels`
{model: {k: fraction}} on the last k frames predicted from the first 40 - k, the dynamics run on with the
prior's mean; `incorrect_pixels_best_of` the same, per sequence the best of --samples sampled continuations;
`blank_frames` {k: fraction} the score of predicting empty frames (the share of on-pixels), for reference.
The figure: the fraction against k, one line per model, and one test video predicted by each model.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

DEFAULT_RUNS = ["models/dynamics/stochastic", "models/dynamics/lstm_f", "models/dynamics/lstm_c"]  # shipped, 16 epochs
LABELS = {"stochastic": "stochastic", "lstm_f": "LSTM-f", "lstm_c": "LSTM-c"}


def load_models(run_dirs) -> dict:
    """{dynamics name: model} from run directories; two runs of the same dynamics are an error."""
    from training.train import load_model
    models = {}
    for run in run_dirs:
        model, _ = load_model(run)
        name = model.config.dynamics
        if name in models:
            raise ValueError(f"{run}: a second model with dynamics {name!r}")
        models[name] = model.eval()
    return models


def plot(models: dict, result: dict, frames, path, *, example: int = 0, missing: int = 20) -> None:
    """Left: incorrect pixels against the number of missing frames (dashed: empty frames predicted); right:
    one video, its last `missing` frames predicted by each model (the last 5 seen frames left of the red line)."""
    import matplotlib
    matplotlib.use("Agg")
    import numpy as np
    import torch
    from matplotlib import pyplot as plt

    from training.data.balls import SIZE
    from vc.files import save_figure
    fig, (ax, ax_img) = plt.subplots(1, 2, figsize=(16, 3.8), gridspec_kw={"width_ratios": [1, 3.6]})
    for name, curve in result["incorrect_pixels"].items():
        ks = sorted(curve, key=int)
        ax.plot([int(k) for k in ks], [curve[k] for k in ks], "o-", label=LABELS.get(name, name))
    blank = result["blank_frames"]
    ks = sorted(blank, key=int)
    ax.plot([int(k) for k in ks], [blank[k] for k in ks], "k--", lw=1, label="empty frames")
    ax.set_xlabel("number of missing frames"); ax.set_ylabel("fraction of incorrect pixels")
    ax.grid(alpha=0.3); ax.legend()
    x = torch.from_numpy(np.asarray(frames[example:example + 1], dtype=np.float32))
    rows = [x[0].numpy()]
    with torch.no_grad():
        rows += [(m.predict_missing(x[:, :-missing], missing)[0] > 0.5).float().numpy() for m in models.values()]
    shown = missing + 5
    tiles = [np.pad(r.reshape(-1, SIZE, SIZE)[-shown:], ((0, 0), (1, 1), (1, 1)), constant_values=0.25)
             for r in rows]       # a grey frame around each tile: the box the ball bounces in
    strip = np.concatenate([np.concatenate(list(t), axis=1) for t in tiles], axis=0)
    ax_img.imshow(strip, cmap="gray_r", interpolation="nearest", aspect="equal", vmin=0, vmax=1)
    ax_img.axvline(5 * (SIZE + 2) - 0.5, color="red")
    ax_img.set_yticks([(SIZE + 2) * (i + 0.5) for i in range(len(rows))],
                      ["data"] + [LABELS.get(n, n) for n in models])
    ax_img.set_xticks([]); ax_img.set_title(f"test video {example}: last {missing} frames predicted")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, path, dpi=90)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", nargs="+", default=DEFAULT_RUNS)
    p.add_argument("--cache", default="data/balls", help="bouncing-balls cache (written there when absent)")
    p.add_argument("--sequences", type=int, default=300)
    p.add_argument("--samples", type=int, default=8, help="draws for the best-of score (0: none)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--figure", default="docs/figures/dynamics.png")
    p.add_argument("--json", action="store_true", help="print the measures as JSON")
    p.add_argument("--out", help="also write the JSON here")
    args = p.parse_args(argv)
    import torch

    from training.balls.data import BallsDataset
    from training.balls.predict import evaluate_dynamics
    from training.data.balls import open_or_make
    from training.train import TrainingError
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    started = time.perf_counter()
    try:
        models = load_models(args.runs)
        frames = BallsDataset(open_or_make(args.cache), "test").frames[:args.sequences]
    except (TrainingError, ValueError) as exc:
        print(f"eval_dynamics: {exc}", file=sys.stderr)
        return 1
    result = evaluate_dynamics(models, frames, samples=args.samples, seed=args.seed)
    result["sequences"] = len(frames)
    result["samples"] = args.samples
    if args.figure:
        plot(models, result, frames, args.figure)
    result["eval_time_s"] = round(time.perf_counter() - started, 1)
    text = json.dumps(result, indent=1)
    if args.out:
        Path(args.out).write_text(text + "\n")
    if args.json:
        print(text)
    else:
        for name, curve in result["incorrect_pixels"].items():
            print(f"{name:11s} recon {result['reconstruction'][name]:.4f}  "
                  + "  ".join(f"k={k}: {v:.4f}" for k, v in curve.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
