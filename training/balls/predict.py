"""Missing-frame prediction scored as in Fraccaro et al. (2017, KVAE): the fraction of incorrect pixels.

A model sees the first T - k frames of a binary video and predicts the last k (DSAE.predict_missing: f and
z from the seen frames, the dynamics run on, frames decoded); a pixel is predicted on when the mean of
p(x_t | .) exceeds 0.5, and the score is the fraction of the k missing frames' pixels that differ from the
truth. The reconstruction error is the same count over all frames when every frame is seen (codes = the
posterior means).

The stochastic prior can be run on with its mean at each step (`samples=0`) or sampled; with samples > 0
each sequence's score is the best of that many draws (for the deterministic transitions the draws are of
the independent z_t ~ N(0, I)), which asks whether the model can produce the true continuation at all
rather than what its single most likely continuation is.
"""
from __future__ import annotations

import numpy as np
import torch

from training.dsae import DSAE

MISSING = (5, 10, 15, 20, 25)


def _wrong(pred_mean: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Per sequence, the fraction of pixels whose thresholded prediction differs from the truth."""
    return ((pred_mean > 0.5) != (truth > 0.5)).float().flatten(1).mean(1)


@torch.no_grad()
def reconstruction_error(model: DSAE, x: torch.Tensor) -> float:
    """Fraction of incorrect pixels when all frames are seen: decode(posterior means)."""
    f, _, z, _ = model.encode(x)
    return float(_wrong(model.decode(f, z), x).mean())


@torch.no_grad()
def prediction_error(model: DSAE, x: torch.Tensor, *, missing: int, samples: int = 0) -> float:
    """Fraction of incorrect pixels on the last `missing` frames of x (B, T, D), predicted from the rest.

    samples 0: the prior's mean at every step; samples N: per sequence the best of N sampled continuations."""
    seen, truth = x[:, :-missing], x[:, -missing:]
    if samples <= 0:
        return float(_wrong(model.predict_missing(seen, missing)[:, -missing:], truth).mean())
    draws = [_wrong(model.predict_missing(seen, missing, use_mean=False)[:, -missing:], truth)
             for _ in range(samples)]
    return float(torch.stack(draws).min(0).values.mean())


def blank_error(frames: np.ndarray, *, missing=MISSING) -> dict:
    """{k: fraction} for predicting empty frames: the share of on-pixels in the last k frames. A ball drawn
    in the wrong place costs up to twice this, so a prediction scoring above it has lost the ball's track."""
    on = np.asarray(frames, dtype=np.float32)
    return {k: float(on[:, -k:].mean()) for k in missing}


def evaluate_dynamics(models: dict[str, DSAE], frames: np.ndarray, *, missing=MISSING, samples: int = 8,
                      seed: int = 0, batch_size: int = 100) -> dict:
    """{"reconstruction": {model: e}, "incorrect_pixels": {model: {k: e}}, "incorrect_pixels_best_of":
    {model: {k: e}}, "blank_frames": {k: e}} over frames (N, T, D) of 0 and 1, averaged over sequences."""
    x_all = torch.from_numpy(np.asarray(frames, dtype=np.float32))
    out = {"reconstruction": {}, "incorrect_pixels": {}, "incorrect_pixels_best_of": {},
           "blank_frames": blank_error(frames, missing=missing)}
    for name, model in models.items():
        model.eval()
        torch.manual_seed(seed)     # the same draws for every model: comparable best-of scores
        sums = {"reconstruction": 0.0, **{("mean", k): 0.0 for k in missing}, **{("best", k): 0.0 for k in missing}}
        for i in range(0, len(x_all), batch_size):
            x = x_all[i:i + batch_size]
            sums["reconstruction"] += reconstruction_error(model, x) * len(x)
            for k in missing:
                sums[("mean", k)] += prediction_error(model, x, missing=k) * len(x)
                if samples > 0:
                    sums[("best", k)] += prediction_error(model, x, missing=k, samples=samples) * len(x)
        n = len(x_all)
        out["reconstruction"][name] = sums["reconstruction"] / n
        out["incorrect_pixels"][name] = {k: sums[("mean", k)] / n for k in missing}
        if samples > 0:
            out["incorrect_pixels_best_of"][name] = {k: sums[("best", k)] / n for k in missing}
    if samples <= 0:
        del out["incorrect_pixels_best_of"]
    return out
