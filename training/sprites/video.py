"""Convolutional frame coders for 64x64 RGB video (the Sprites variant of the DSAE).

`training.dsae.DSAE` sees a frame as a flat vector of `feature_dim` numbers and only its frame encoder and
decoder know what a frame is. For video a frame is a 3x64x64 image stored channel-first and flattened
(feature_dim = 12288): `ConvFrameEncoder` reshapes it and maps it to an encoding through strided
convolutions, `ConvFrameDecoder` mirrors it with transposed convolutions and a sigmoid (pixel means in
[0, 1], the published RGB / 256 scale). The DSAE's Gaussian likelihood with a fixed variance
(`x_logvar` in the config) is the pixel model.

The pair is DCGAN-shaped (4x4 kernels, stride 2, batch normalisation and LeakyReLU between them) and narrow:
on this project's 2-core machine the convolutions are nearly all of a training step's time, and the width is
the knob (`conv_width`). Without normalisation two first runs failed within 200 steps: plain convolutions let
the encodings grow to |h| ~ 200, saturating the LSTM of q(f) (f the same for every sequence); a LayerNorm
on the encodings alone left them nearly independent of the input. In eval mode (export, evaluation) batch
normalisation uses its running statistics, so an exported frame's code does not depend on its batch.
"""
from __future__ import annotations

import torch
from torch import nn

IMAGE_SHAPE = (3, 64, 64)
IMAGE_SIZE = IMAGE_SHAPE[0] * IMAGE_SHAPE[1] * IMAGE_SHAPE[2]
_DOWN = 4          # stride-2 stages from 64x64 to 4x4


def _widths(width: int) -> list[int]:
    return [IMAGE_SHAPE[0]] + [width * 2 ** i for i in range(_DOWN)]


class ConvFrameEncoder(nn.Module):
    """(B, T, 12288) flattened CHW frames -> (B, T, out_dim) encodings, each frame on its own."""

    def __init__(self, out_dim: int, width: int = 16, norm_encodings: bool = False):
        super().__init__()
        self.out_dim = out_dim
        chans = _widths(width)
        layers = []
        for i, (c_in, c_out) in enumerate(zip(chans[:-1], chans[1:])):
            layers.append(nn.Conv2d(c_in, c_out, 4, stride=2, padding=1, bias=i == 0))
            if i > 0:
                layers.append(nn.BatchNorm2d(c_out))
            layers.append(nn.LeakyReLU(0.2))
        self.conv = nn.Sequential(*layers)
        side = IMAGE_SHAPE[1] >> _DOWN
        # tanh bounds what the LSTMs of q(f) and q(z) see. Unnormalised, its input grows (pre-tanh spread 7
        # in the first shipped model, 81 % of the encodings at |h| > 0.99): the encodings become nearly
        # binary and pass no gradient, so fine differences (pants colour) are never learned. A batch
        # normalisation without scale or shift keeps the tanh near its linear range.
        norm = [nn.BatchNorm1d(out_dim, affine=False)] if norm_encodings else []
        self.out = nn.Sequential(nn.Linear(chans[-1] * side * side, out_dim), *norm, nn.Tanh())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        h = self.conv(x.reshape(-1, *IMAGE_SHAPE))
        return self.out(h.flatten(1)).reshape(*lead, self.out_dim)


class ConvFrameDecoder(nn.Module):
    """(B, T, in_dim) codes [z_t, f] -> (B, T, 12288) pixel means in [0, 1], flattened CHW.

    With `film`, the code also scales and shifts the channels after every batch normalisation
    (feature-wise linear modulation, Perez et al. 2018), so each upsampling stage sees the character's
    colours directly instead of only through the 4x4 seed. The modulations start at zero: a decoder with
    them computes what the same weights computed without them (fine-tuning from such a run starts there).
    """

    def __init__(self, in_dim: int, width: int = 16, film: bool = False):
        super().__init__()
        chans = _widths(width)[::-1]
        self.side = IMAGE_SHAPE[1] >> _DOWN
        self.first_channels = chans[0]
        self.inp = nn.Linear(in_dim, chans[0] * self.side * self.side)
        layers = [nn.BatchNorm2d(chans[0]), nn.LeakyReLU(0.2)]
        for i, (c_in, c_out) in enumerate(zip(chans[:-1], chans[1:])):
            last = i == len(chans) - 2
            layers.append(nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1, bias=last))
            layers += [nn.Sigmoid()] if last else [nn.BatchNorm2d(c_out), nn.LeakyReLU(0.2)]
        self.deconv = nn.Sequential(*layers)
        self.film = None
        if film:
            norms = [m.num_features for m in layers if isinstance(m, nn.BatchNorm2d)]
            self.film = nn.ModuleList(nn.Linear(in_dim, 2 * c) for c in norms)
            for lin in self.film:
                nn.init.zeros_(lin.weight)
                nn.init.zeros_(lin.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        lead = h.shape[:-1]
        code = h.reshape(-1, h.shape[-1])
        g = self.inp(code).reshape(-1, self.first_channels, self.side, self.side)
        if self.film is None:
            return self.deconv(g).reshape(*lead, IMAGE_SIZE)
        k = 0
        for layer in self.deconv:
            g = layer(g)
            if isinstance(layer, nn.BatchNorm2d):
                scale, shift = self.film[k](code)[:, :, None, None].chunk(2, dim=1)
                g = g * (1.0 + scale) + shift
                k += 1
        return g.reshape(*lead, IMAGE_SIZE)


def frames_to_features(frames) -> "torch.Tensor | object":
    """(..., 64, 64, 3) uint8 HWC frames -> (..., 12288) float32 CHW / 256 (NumPy in, NumPy out)."""
    import numpy as np

    frames = np.asarray(frames)
    chw = np.moveaxis(frames, -1, -3).astype(np.float32) / 256.0
    return chw.reshape(*frames.shape[:-3], IMAGE_SIZE)


def features_to_frames(x) -> "object":
    """(..., 12288) CHW pixel means -> (..., 64, 64, 3) uint8 HWC images."""
    import numpy as np

    x = np.asarray(x, dtype=np.float32).reshape(*np.shape(x)[:-1], *IMAGE_SHAPE)
    return np.clip(np.round(np.moveaxis(x, -3, -1) * 256.0), 0, 255).astype(np.uint8)
