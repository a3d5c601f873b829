"""Figures of an evaluation: DET curves on normal-deviate axes and a PCA scatter of the embeddings."""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from vc.files import save_figure


def plot_det(curves: dict[str, tuple[np.ndarray, np.ndarray, float]], path: os.PathLike | str, title: str = "") -> None:
    """DET plot on normal-deviate axes; ``curves`` maps a label to ``(p_fa, p_miss, eer)``."""
    from matplotlib.figure import Figure
    from scipy.stats import norm

    ticks = np.array([0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 0.95])
    low, high = 0.001, 0.95
    figure = Figure(figsize=(5.5, 5.5))
    axes = figure.add_subplot()
    for label, (p_fa, p_miss, eer) in curves.items():
        # Clipping to the axis limits draws a perfect system along the bottom and left edges.
        x = norm.ppf(np.clip(p_fa, low, high))
        y = norm.ppf(np.clip(p_miss, low, high))
        (line,) = axes.plot(x, y, label=f"{label} (EER {100 * eer:.2f} %)", clip_on=False)
        deviate = norm.ppf(np.clip(eer, low, high))
        axes.plot([deviate], [deviate], "o", color=line.get_color(), clip_on=False)
    span = norm.ppf([low, high])
    axes.plot(span, span, ":", color="grey", linewidth=0.8)
    axes.set_xticks(norm.ppf(ticks), [f"{100 * t:g}" for t in ticks])
    axes.set_yticks(norm.ppf(ticks), [f"{100 * t:g}" for t in ticks])
    axes.set_xlim(*span)
    axes.set_ylim(*span)
    axes.set_xlabel("false alarm rate (%)")
    axes.set_ylabel("miss rate (%)")
    axes.set_title(title or "DET")
    axes.grid(True, linewidth=0.4)
    axes.legend(loc="upper right", fontsize="small")
    save_figure(figure, path, dpi=120, bbox_inches="tight")


def plot_pca(embeddings: np.ndarray, speakers: Sequence[str], path: os.PathLike | str, title: str = "") -> None:
    """Scatter of the first two principal components of the embeddings, coloured by speaker."""
    from matplotlib.figure import Figure
    import matplotlib

    vectors = np.asarray(embeddings, dtype=np.float64)
    centred = vectors - vectors.mean(axis=0)
    _, singular, components = np.linalg.svd(centred, full_matrices=False)
    projected = centred @ components[:2].T
    if projected.shape[1] < 2:
        projected = np.hstack([projected, np.zeros((len(projected), 1))])
    explained = singular**2 / max(float(np.sum(singular**2)), 1e-30)
    names = sorted(set(speakers))
    colours = matplotlib.colormaps["tab20"].resampled(max(len(names), 1))
    figure = Figure(figsize=(6.5, 5.5))
    axes = figure.add_subplot()
    labels = np.asarray(speakers)
    for index, name in enumerate(names):
        chosen = labels == name
        axes.scatter(projected[chosen, 0], projected[chosen, 1], s=12, color=colours(index), label=name)
    axes.set_xlabel(f"PC 1 ({100 * explained[0]:.1f} % of variance)")
    axes.set_ylabel(f"PC 2 ({100 * (explained[1] if len(explained) > 1 else 0):.1f} % of variance)")
    axes.set_title(title or "PCA of utterance embeddings")
    if len(names) <= 24:
        axes.legend(fontsize="x-small", ncol=2, markerscale=1.5, loc="best")
    save_figure(figure, path, dpi=120, bbox_inches="tight")
