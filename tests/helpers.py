"""Helpers shared by the tests: one speech generator, and small models written by the real exporter
(`training.export.write_model_dir`, which `vc-export` uses) under the format `vc.model_format` names.
Test modules import them from here (`from helpers import speech`); conftest.py builds its fixtures on them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SR = 16000
REPO = Path(__file__).resolve().parent.parent


# --- speech ---------------------------------------------------------------------------------------------------
def interruptible() -> None:
    """preexec_fn for a child process that a test stops with SIGINT (Ctrl-C). A test run started in the
    background by a non-interactive shell (`make test &`) inherits SIGINT ignored; Python then installs no
    KeyboardInterrupt handler in the child and the Ctrl-C under test is lost. The child gets it back."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def speech(seconds: float = 2.0, *, f0: float = 140.0, formant: float | None = None, seed: int = 0,
           sr: int = SR, peak: float = 0.3) -> np.ndarray:
    """Speech-like float32 audio: harmonics of a pitch with vibrato, under a spectral envelope, in syllables
    separated by short pauses, with a little noise.

    f0: mean pitch (Hz). formant: the envelope's first peak (Hz; a second one at 2.6x), which gives a
    "speaker" its timbre; None: harmonics falling off as 1/k. seed: vibrato and syllable rates, phase and
    noise. peak: the largest absolute sample.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    pitch = f0 * (1 + 0.05 * np.sin(2 * np.pi * rng.uniform(1.0, 5.0) * t))
    phase = 2 * np.pi * np.cumsum(pitch) / sr
    y = np.zeros_like(t)
    for k in range(1, int(min(7000.0, 0.45 * sr) / (1.05 * f0)) + 1):
        if formant is None:
            gain = (1 + 0.5 * np.sin(2 * np.pi * (0.7 + 0.3 * k) * t + k)) / k
        else:
            gain = (np.exp(-0.5 * ((k * f0 - formant) / 500.0) ** 2)
                    + 0.3 * np.exp(-0.5 * ((k * f0 - 2.6 * formant) / 600.0) ** 2))
        y += gain * np.sin(k * phase)
    syllables = (np.sin(2 * np.pi * rng.uniform(2.5, 4.5) * t + rng.uniform(0, 6)) > -0.3).astype(float)
    envelope = np.convolve(syllables, np.hanning(int(0.03 * sr)) / np.hanning(int(0.03 * sr)).sum(), mode="same")
    y = y * envelope
    y = peak * y / max(np.abs(y).max(), 1e-9)
    return (y + 0.01 * peak * rng.standard_normal(t.size)).astype(np.float32)


# --- models ---------------------------------------------------------------------------------------------------
def make_metadata(n_features: int, *, f_dim: int, z_dim: int, hidden_dim: int, variant: str = "full",
                  model_id: str = "test", norm_mean=None, norm_std=None, corpus: str = "test") -> dict:
    from vc.dsp import FeatureConfig
    from vc.model_format import model_metadata

    cfg = FeatureConfig()
    return model_metadata(
        feature_config=cfg.to_dict(), feature_config_hash=cfg.hash(),
        norm_mean=np.full(n_features, -4.0) if norm_mean is None else norm_mean,
        norm_std=np.full(n_features, 2.0) if norm_std is None else norm_std,
        f_dim=f_dim, z_dim=z_dim, hidden_dim=hidden_dim, variant=variant, segment_length=20, corpus=corpus,
        model_id=model_id)


def export_graphs(encoder, decoder, out_dir, metadata: dict) -> Path:
    """Any encoder/decoder pair of torch modules -> a model directory, through the real exporter."""
    from training.export import write_model_dir

    write_model_dir(encoder.eval(), decoder.eval(), Path(out_dir), metadata, n_features=200,
                    f_dim=metadata["f_dim"], z_dim=metadata["z_dim"])
    return Path(out_dir)


def tiny_model_dir(out_dir, *, f_dim: int = 8, z_dim: int = 4, variant: str = "full", seed: int = 0):
    """A freshly initialised tiny DSAE exported as vc-export exports one; returns (dir, torch model).
    Its normalisation puts loud speech's log-magnitudes near 0, so its random output is audible."""
    import torch

    from training.dsae import DSAE, DSAEConfig
    from training.export import ExportDecoder, ExportEncoder

    torch.manual_seed(seed)
    model = DSAE(DSAEConfig(f_dim=f_dim, z_dim=z_dim, hidden_dim=16, frame_hidden=32, variant=variant)).eval()
    rng = np.random.default_rng(seed)
    meta = make_metadata(200, f_dim=f_dim, z_dim=z_dim, hidden_dim=16, variant=variant,
                         model_id=f"tiny-{variant}-{seed}", norm_mean=-4.0 + 0.1 * rng.standard_normal(200),
                         norm_std=2.0 + 0.1 * rng.random(200))
    return export_graphs(ExportEncoder(model), ExportDecoder(model), out_dir, meta), model


def identity_model_dir(out_dir, f_dim: int = 8) -> Path:
    """z = x and x_mean = z (z_dim = n_features), so conversion is resynthesis of the input's magnitude:
    the tool to measure the engine's delay."""
    import torch

    class Encoder(torch.nn.Module):
        def forward(self, x):
            f = x.mean(dim=1)[:, :f_dim]
            return f, torch.zeros_like(f), x, torch.zeros_like(x)

    class Decoder(torch.nn.Module):
        def forward(self, f, z):
            return z + 0.0 * f.sum(dim=-1)[:, None, None]

    meta = make_metadata(200, f_dim=f_dim, z_dim=200, hidden_dim=1, model_id="identity")
    return export_graphs(Encoder(), Decoder(), out_dir, meta)


def target_code(model, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(model.f_dim).astype(np.float32)
