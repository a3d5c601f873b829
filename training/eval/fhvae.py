"""The FHVAE baseline (training.fhvae) as vc-eer sees it: a run directory that encodes segments.

`FHVAEEncoder` has what :func:`training.eval.embeddings.model_embeddings` needs of a model
(``segment_length``, ``normalise``, ``encode``), with z2 in the place of f and z1 in the place of z, so
both are made by the same protocol as the DSAE's codes: the utterance's embedding is the mean over its
segments of the posterior mean. torch is imported only when an FHVAE is evaluated.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.eval.metrics import EvaluationError


class FHVAEEncoder:
    """The latest checkpoint of an FHVAE run, for inference on raw log-magnitude frames."""

    def __init__(self, run_dir):
        import torch

        from training.config import TrainingError
        from training.fhvae_train import load_fhvae
        from vc.dsp import FeatureConfig

        self.run_dir = Path(run_dir)
        try:
            self.model, state = load_fhvae(self.run_dir)
            manifest = json.loads((self.run_dir / "cache_manifest.json").read_text())
            self.feature_config = FeatureConfig.from_dict(manifest["feature_config"])
            self.segment_length = int(manifest["segment_length"])
            self.mean = np.load(self.run_dir / "cache_mean.npy").astype(np.float32)
            self.std = np.load(self.run_dir / "cache_std.npy").astype(np.float32)
            self.alpha = float(json.loads((self.run_dir / "fhvae.json").read_text())["alpha"])
        except TrainingError as exc:
            raise EvaluationError(str(exc)) from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise EvaluationError(f"{self.run_dir}: not a complete FHVAE run directory ({exc})") from None
        self.step = int(state.get("global_step", 0))
        self._torch = torch

    def describe(self) -> str:
        c = self.model.config
        return f"FHVAE {self.run_dir} [alpha {self.alpha:g}, step {self.step}, z1={c.z1_dim}, z2={c.z2_dim}]"

    def normalise(self, frames: np.ndarray) -> np.ndarray:
        return ((np.asarray(frames, dtype=np.float32) - self.mean) / self.std).astype(np.float32, copy=False)

    def encode(self, x: np.ndarray):
        """Normalised (B, T, D) -> (z2_mean, z2_logvar, z1_mean (B, 1, z1_dim), z1_logvar): the layout of the
        DSAE's (f, z), z1 as a one-frame sequence."""
        with self._torch.no_grad():
            z1_mean, z1_logvar, z2_mean, z2_logvar = self.model.encode(self._torch.from_numpy(np.asarray(x)))
        return z2_mean.numpy(), z2_logvar.numpy(), z1_mean[:, None].numpy(), z1_logvar[:, None].numpy()


@dataclass
class FHVAEEntry:
    """One --fhvae given to vc-eer: its name (the prefix of its embeddings) and run directory."""
    name: str
    run_dir: str


def parse_fhvae_entries(values) -> list[FHVAEEntry]:
    """`RUN_DIR` or `NAME=RUN_DIR` per value. Unnamed: the first is `fhvae`; later ones, whose alpha is
    only known once loaded, are named there (`name_models`)."""
    entries = []
    for value in values or ():
        name, sep, run_dir = str(value).partition("=")
        if not sep:
            name, run_dir = "", name
        elif not name.isidentifier() or not name.startswith("fhvae"):
            raise EvaluationError(f"--fhvae {value}: a name must be a word starting with 'fhvae' (e.g. fhvae10=RUN)")
        entries.append(FHVAEEntry(name, run_dir))
    return entries


def load_fhvae_models(entries: list[FHVAEEntry], log) -> dict[str, FHVAEEncoder]:
    """Name -> encoder. Unnamed runs: `fhvae` for the first, `fhvae<alpha>` (e.g. fhvae10) for the rest."""
    models: dict[str, FHVAEEncoder] = {}
    for position, entry in enumerate(entries):
        encoder = FHVAEEncoder(entry.run_dir)
        name = entry.name or ("fhvae" if position == 0 else f"fhvae{encoder.alpha:g}".replace(".", "_"))
        if name in models:
            raise EvaluationError(f"--fhvae: two runs are named {name!r}; name them (NAME=RUN_DIR)")
        models[name] = encoder
        log(f"{name}: {encoder.describe()}")
    return models
