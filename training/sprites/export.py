"""ONNX export of a Sprites (video) run: the `vc-export` path for runs trained with ``--data sprites``.

    encoder.onnx   x (B, T, 3, 64, 64) float32, RGB / 256 -> f_mean, f_logvar (B, f_dim), z_mean, z_logvar (B, T, z_dim)
    decoder.onnx   f (B, f_dim), z (B, T, z_dim) -> x_mean (B, T, 3, 64, 64), pixel means in [0, 1]

Batch and T are dynamic. The `dsae` metadata names the data kind and the image shape and layout, so a
reader needs nothing else; the graphs are checked against PyTorch (max abs difference <= 1e-4) on random
sequences and, when the render cache is at hand, on real test sequences.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from training.dsae import DSAE
from training.sprites.video import IMAGE_SHAPE, IMAGE_SIZE
from vc import model_format as fmt

FORMAT_VERSION = 1


class VideoEncoder(nn.Module):
    def __init__(self, model: DSAE):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model.encode(x.flatten(2))


class VideoDecoder(nn.Module):
    def __init__(self, model: DSAE):
        super().__init__()
        self.model = model

    def forward(self, f, z):
        x = self.model.decode(f, z)
        return x.reshape(x.shape[0], x.shape[1], *IMAGE_SHAPE)


def video_metadata(role: str, model: DSAE, model_id: str) -> dict:
    c = model.config
    return {
        "format_version": FORMAT_VERSION, "role": role, "data": "sprites", "corpus": "sprites-lpc",
        "image_shape": list(IMAGE_SHAPE), "layout": "B,T,C,H,W", "pixel_scale": "RGB / 256",
        "likelihood": f"gaussian, fixed log-variance {c.x_logvar}" if not isinstance(c.x_logvar, str)
        else "gaussian, learned log-variance",
        "f_dim": c.f_dim, "z_dim": c.z_dim, "hidden_dim": c.hidden_dim, "variant": c.variant,
        "frame_coder": c.frame_coder, "segment_length": 8, "model_id": model_id,
    }


def _real_sequences(cache: str, n: int = 12) -> np.ndarray | None:
    try:
        from training.data import sprites
        from training.sprites.video import frames_to_features
        data = sprites.load_split(cache, "test", layers=None)
    except (ValueError, OSError):      # the cache may be gone; random inputs still check parity
        return None
    idx = np.linspace(0, len(data.frames) - 1, n).astype(np.int64)
    return frames_to_features(data.frames[idx]).reshape(n, 8, *IMAGE_SHAPE)


def export_video(model: DSAE, features: str, out_dir: Path, model_id: str, tolerance: float) -> tuple[dict, float]:
    """Write encoder.onnx and decoder.onnx for a video model; returns (encoder metadata, parity)."""
    from training.export import ExportError, _export_onnx, check_parity
    c = model.config
    if c.feature_dim != IMAGE_SIZE:
        raise ExportError(f"{out_dir}: a Sprites model must have feature_dim {IMAGE_SIZE}, not {c.feature_dim}")
    out_dir.mkdir(parents=True, exist_ok=True)
    enc_meta = video_metadata("encoder", model, model_id)
    T = 8
    # Wrappers in eval mode: the exporter restores the wrapper's mode recursively afterwards, and a wrapper in
    # training mode would leave the batch normalisation of the frame coders in training mode.
    model.eval()
    examples = {"encoder": (torch.zeros(2, T, *IMAGE_SHAPE),),
                "decoder": (torch.zeros(2, c.f_dim), torch.zeros(2, T, c.z_dim))}
    for role, wrapper, file in (("encoder", VideoEncoder, fmt.ENCODER_FILE), ("decoder", VideoDecoder, fmt.DECODER_FILE)):
        inputs, outputs = fmt.io_names(role)
        _export_onnx(wrapper(model).eval(), examples[role], out_dir / file, list(inputs), list(outputs),
                     fmt.dynamic_axes(role), fmt.for_role(enc_meta, role))
    rng = np.random.default_rng(0)
    inputs = [rng.random((1, T, *IMAGE_SHAPE), dtype=np.float32), rng.random((3, 5, *IMAGE_SHAPE), dtype=np.float32)]
    real = _real_sequences(features)
    if real is not None:
        inputs.append(real)
    worst = check_parity(model.eval(), out_dir, inputs, encode=VideoEncoder(model), decode=VideoDecoder(model))
    if worst > tolerance:
        raise ExportError(f"{out_dir}: ONNX Runtime differs from PyTorch by {worst:.3g} (> {tolerance})")
    (out_dir / "export.json").write_text(json.dumps({**enc_meta, "role": "both", "parity_max_abs": worst}, indent=1))
    return enc_meta, worst
