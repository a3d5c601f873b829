"""Random voice changes on log-magnitude spectra, for teaching z to ignore who speaks.

Speakers differ mostly in pitch (the spacing of the harmonics), in vocal-tract length (the formants of the
spectral envelope sit higher or lower), in spectral tilt (breathy or pressed voices, microphones) and in
level. A log-magnitude frame is the sum of an envelope and a fine structure (source-filter model), so each
can be moved on its own: the envelope is the frame smoothed across frequency, the fine structure the rest.
Changing a segment this way keeps what is said and changes the apparent speaker, so the dynamic codes of
the two versions should agree (training.config.Objective's `z_invariance_weight`). An adversary can only
hide the training speakers it has seen; an invariance to a continuous family of voice changes carries over
to new speakers.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch.nn import functional as F


def _warp(log_mag: torch.Tensor, factor: torch.Tensor, first_bin: int) -> torch.Tensor:
    """Output bin k takes the input at frequency k / factor (factor > 1 moves the spectrum up).

    log_mag (B, T, D), factor (B, 1, 1); linear interpolation between bins, edge values beyond the ends.
    """
    B, T, D = log_mag.shape
    bins = torch.arange(D, device=log_mag.device, dtype=log_mag.dtype) + first_bin
    source = (bins.view(1, 1, D) / factor - first_bin).clamp(0.0, D - 1.0)   # (B, 1, D)
    lower = source.floor().long().clamp(max=D - 2)
    frac = (source - lower).expand(-1, T, -1)
    lower = lower.expand(-1, T, -1)
    return torch.lerp(log_mag.gather(2, lower), log_mag.gather(2, lower + 1), frac)


class VoicePerturbation:
    """Apply a random pitch shift, formant shift, tilt and gain per segment to a batch of *normalised*
    log-magnitude segments.

    mean, std: the normalisation of the features (per bin); the change is made on the log magnitude
    (natural log) and normalised again. first_bin: the FFT bin index of feature column 0 (1 when DC is
    dropped), so that shifts scale frequencies, not column numbers.
    max_pitch: factor range of the fine structure (harmonic spacing), log-uniform in [1/max, max];
    max_warp: the same for the envelope (formants); max_tilt: nats of level difference between the lowest
    and highest bin, uniform in [-max_tilt, max_tilt]; max_gain: nats, uniform likewise.
    envelope_bins: width of the smoothing across frequency that separates envelope from fine structure
    (wider than the harmonic spacing of the lowest voices: 9 bins of 40 Hz cover F0 down to ~90 Hz).
    """

    def __init__(self, mean, std, *, first_bin: int = 1, max_pitch: float = 1.0, max_warp: float = 1.2,
                 max_tilt: float = 1.0, max_gain: float = 1.0, envelope_bins: int = 9):
        if max_pitch < 1.0 or max_warp < 1.0 or max_tilt < 0.0 or max_gain < 0.0:
            raise ValueError("max_pitch and max_warp must be >= 1, max_tilt and max_gain >= 0")
        if envelope_bins < 1 or envelope_bins % 2 == 0:
            raise ValueError(f"envelope_bins must be odd and positive, not {envelope_bins}")
        self.mean = torch.as_tensor(np.asarray(mean, dtype=np.float32))
        self.std = torch.as_tensor(np.asarray(std, dtype=np.float32))
        if self.mean.ndim != 1 or self.mean.shape != self.std.shape:
            raise ValueError("mean and std must be equal 1-D shapes")
        self.first_bin = int(first_bin)
        self.log_max_pitch = math.log(max_pitch)
        self.log_max_warp = math.log(max_warp)
        self.max_tilt = float(max_tilt)
        self.max_gain = float(max_gain)
        self.smoother = torch.hann_window(envelope_bins + 2, periodic=False)[1:-1]
        self.smoother = (self.smoother / self.smoother.sum()).view(1, 1, -1)

    def envelope(self, log_mag: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> the same frames smoothed across frequency (edges padded by repetition)."""
        B, T, D = log_mag.shape
        flat = log_mag.reshape(B * T, 1, D)
        pad = self.smoother.shape[-1] // 2
        flat = F.pad(flat, (pad, pad), mode="replicate")
        return F.conv1d(flat, self.smoother.to(log_mag.device, log_mag.dtype)).view(B, T, D)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, T, D) normalised features -> a perturbed copy, same shape and normalisation."""
        B, _, D = x.shape
        device = x.device
        mean, std = self.mean.to(device), self.std.to(device)
        log_mag = x * std + mean

        def uniform(scale):
            return (torch.rand(B, 1, 1, device=device, dtype=x.dtype) * 2.0 - 1.0) * scale

        changed = log_mag
        if self.log_max_pitch > 0:
            envelope = self.envelope(log_mag)
            fine = _warp(log_mag - envelope, uniform(self.log_max_pitch).exp(), self.first_bin)
            changed = _warp(envelope, uniform(self.log_max_warp).exp(), self.first_bin) + fine
        elif self.log_max_warp > 0:
            changed = _warp(log_mag, uniform(self.log_max_warp).exp(), self.first_bin)
        position = torch.linspace(-0.5, 0.5, D, device=device, dtype=x.dtype).view(1, 1, D)
        changed = changed + uniform(self.max_tilt) * position + uniform(self.max_gain)
        return (changed - mean) / std


def change_level(x: torch.Tensor, std: torch.Tensor, max_gain: float) -> torch.Tensor:
    """The same normalised segments played louder or quieter: one gain per segment, uniform in
    [-max_gain, max_gain] nats of magnitude (20 dB is 2.3 nats). Fed to q(f) for the partner segments,
    it teaches f that level is not who speaks (a quiet microphone must not change the speaker)."""
    gain = (torch.rand(x.shape[0], 1, 1, device=x.device, dtype=x.dtype) * 2.0 - 1.0) * max_gain
    return x + gain / std.to(x.device, x.dtype)
