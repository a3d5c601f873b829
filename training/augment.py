"""Random voice changes on log-magnitude spectra, for teaching z to ignore who speaks.

Speakers differ mostly in vocal-tract length (formants and harmonics sit higher or lower: a warp of the
frequency axis), in spectral tilt (breathy or pressed voices, microphones) and in level. Applying such a
change to a segment keeps what is said and changes the apparent speaker, so the dynamic codes of the two
versions should agree (`DSAEConfig.z_invariance_weight`). An adversary can only hide the training speakers
it has seen; an invariance to a continuous family of voice changes carries over to new speakers.
"""
from __future__ import annotations

import math

import numpy as np
import torch


class VoicePerturbation:
    """Apply a random warp, tilt and gain per segment to a batch of *normalised* log-magnitude segments.

    mean, std: the normalisation of the features (per bin); the change is made on the log magnitude
    (natural log) and normalised again. first_bin: the FFT bin index of feature column 0 (1 when DC is
    dropped), so that the warp scales frequencies, not column numbers.
    max_warp: frequency factors log-uniform in [1/max_warp, max_warp]; max_tilt: nats of level difference
    between the lowest and highest bin, uniform in [-max_tilt, max_tilt]; max_gain: nats, uniform likewise.
    """

    def __init__(self, mean, std, *, first_bin: int = 1, max_warp: float = 1.2, max_tilt: float = 1.0,
                 max_gain: float = 1.0):
        if max_warp < 1.0 or max_tilt < 0.0 or max_gain < 0.0:
            raise ValueError("max_warp must be >= 1, max_tilt and max_gain >= 0")
        self.mean = torch.as_tensor(np.asarray(mean, dtype=np.float32))
        self.std = torch.as_tensor(np.asarray(std, dtype=np.float32))
        if self.mean.ndim != 1 or self.mean.shape != self.std.shape:
            raise ValueError("mean and std must be equal 1-D shapes")
        self.first_bin = int(first_bin)
        self.log_max_warp = math.log(max_warp)
        self.max_tilt = float(max_tilt)
        self.max_gain = float(max_gain)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, T, D) normalised features -> a perturbed copy, same shape and normalisation."""
        B, _, D = x.shape
        device = x.device
        mean, std = self.mean.to(device), self.std.to(device)
        log_mag = x * std + mean

        def uniform(scale):
            return (torch.rand(B, 1, 1, device=device) * 2.0 - 1.0) * scale

        # Output bin k takes the input at frequency k / warp: warp > 1 moves the spectrum up.
        warp = uniform(self.log_max_warp).exp()
        bins = torch.arange(D, device=device, dtype=x.dtype) + self.first_bin
        source = (bins.view(1, 1, D) / warp - self.first_bin).clamp(0.0, D - 1.0)   # (B, 1, D)
        lower = source.floor().long().clamp(max=D - 2)
        frac = source - lower
        lower = lower.expand(-1, x.shape[1], -1)
        frac = frac.expand(-1, x.shape[1], -1)
        warped = torch.lerp(log_mag.gather(2, lower), log_mag.gather(2, lower + 1), frac)

        position = torch.linspace(-0.5, 0.5, D, device=device, dtype=x.dtype).view(1, 1, D)
        warped = warped + uniform(self.max_tilt) * position + uniform(self.max_gain)
        return (warped - mean) / std
