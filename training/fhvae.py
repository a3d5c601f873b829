"""The Factorized Hierarchical VAE (Hsu, Zhang & Glass, NeurIPS 2017): the DSAE paper's speech baseline.

A sequence i (here: an utterance) is cut into segments x^(i,n), n = 1..N_i (here: 20-frame segments of
the feature cache). Generative model, for segment n of sequence i:
    mu2_i ~ p(mu2) = N(0, I)                              one per sequence: the sequence's identity
    z2 ~ p(z2 | mu2_i) = N(mu2_i, sigma_z2^2 I)           sequence-level latent, sigma_z2 = 0.5
    z1 ~ p(z1) = N(0, I)                                  segment-level latent
    x_t ~ p(x_t | z1, z2) = N(dec_t(z1, z2))              an LSTM decoder, frame by frame

Inference model (both LSTMs over the segment's frames):
    q(z2 | x)        z2 first: it sees only the segment
    q(z1 | x, z2)    z1 is told z2, so it need only hold what z2 does not explain
    mu2_i            a point estimate per training sequence: a lookup table learnt with the networks

Segment variational lower bound (the paper's L(p, q; x^(i,n))):
    L = E_q[log p(x | z1, z2)] - KL(q(z1 | x, z2) || p(z1)) - KL(q(z2 | x) || p(z2 | mu2_i))
        + (1 / N_i) log p(mu2_i)
log p(mu2_i) is shared by the N_i segments of sequence i, so each carries 1 / N_i of it: summed over the
sequence, the bound is that of the whole sequence.

Discriminative objective: L^dis = L + alpha * log p(i | z2bar), with z2bar the posterior mean of
q(z2 | x) and p(i | z2bar) = p(z2bar | mu2_i) / sum_j p(z2bar | mu2_j), the sum over every sequence of
the training set (the whole mu2 table, not only the batch's sequences). Without it (alpha = 0) nothing
stops all mu2_i from sitting at the same point, with z2 then free to carry anything that is constant
within a segment; the term makes z2 tell the sequences apart, hence (sequences being utterances) it
pushes the speaker and channel into z2.

A new sequence has no mu2 in the table; for speaker verification the utterance's embedding is the mean
over its segments of the posterior mean of z2 (and of z1), as vc-eer makes f and z of the DSAE. The
paper's closed-form estimate of mu2 for a new sequence is `mu2_estimate`.

Trainer and command line: training.fhvae_train (`python -m training.fhvae train ...`).
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from training.dsae import LOG_2PI, Options, gaussian_kl, sample

# The paper's prior scales: p(z2 | mu2) = N(mu2, 0.5^2 I), p(mu2) = N(0, I).
Z2_PRIOR_STD = 0.5
MU2_PRIOR_STD = 1.0


@dataclass
class FHVAEConfig(Options):
    """The architecture: one LSTM layer per network (the README's runs use hidden 128, to train in minutes on
    one CPU thread), z1 and z2 of 32 dimensions as in the paper's EER table."""
    option_kind: ClassVar[str] = "fhvae"

    feature_dim: int = 200
    z1_dim: int = 32
    z2_dim: int = 32
    hidden_dim: int = 256
    # Rows of the mu2 table: the number of training sequences (0: a model for inference only).
    n_sequences: int = 0

    def __post_init__(self):
        for name in ("feature_dim", "z1_dim", "z2_dim", "hidden_dim"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"{name} must be positive, not {getattr(self, name)}")
        if int(self.n_sequences) < 0:
            raise ValueError(f"n_sequences must not be negative, not {self.n_sequences}")


def _gaussian(params: torch.Tensor):
    """(mean, log-variance) from a layer's output; bounded log-variances keep exp() finite early on."""
    mean, logvar = params.chunk(2, dim=-1)
    return mean, logvar.clamp(-12.0, 8.0)


def _last_state(lstm: nn.LSTM, inputs: torch.Tensor) -> torch.Tensor:
    """The LSTM's hidden state after the segment's last frame: (B, hidden)."""
    _, (h_n, _) = lstm(inputs)
    return h_n[-1]


def mu2_estimate(z2_means: torch.Tensor) -> torch.Tensor:
    """The paper's closed-form mu2 of a sequence from its segments' posterior means (N, z2_dim):
    the maximiser of sum_n log p(z2_n | mu2) + log p(mu2), sum_n z2_n / (N + sigma_z2^2 / sigma_mu2^2)."""
    shrink = (Z2_PRIOR_STD / MU2_PRIOR_STD) ** 2
    return z2_means.sum(0) / (z2_means.shape[0] + shrink)


class FHVAE(nn.Module):
    def __init__(self, config: FHVAEConfig):
        super().__init__()
        c = self.config = config
        H = c.hidden_dim
        # q(z2 | x) and q(z1 | x, z2): an LSTM over the frames, its last state gives the Gaussian.
        self.z2_lstm = nn.LSTM(c.feature_dim, H, batch_first=True)
        self.z2_out = nn.Linear(H, 2 * c.z2_dim)
        self.z1_lstm = nn.LSTM(c.feature_dim + c.z2_dim, H, batch_first=True)
        self.z1_out = nn.Linear(H, 2 * c.z1_dim)
        # p(x_t | z1, z2): an LSTM fed [z1, z2] at every frame, a Gaussian per frame (mean, log-variance).
        self.x_lstm = nn.LSTM(c.z1_dim + c.z2_dim, H, batch_first=True)
        self.x_out = nn.Linear(H, 2 * c.feature_dim)
        # mu2_i of every training sequence. Zeros: the prior's mode, and every sequence starts alike.
        self.mu2 = nn.Parameter(torch.zeros(c.n_sequences, c.z2_dim))

    # --- inference -----------------------------------------------------------------------------------

    def posterior_z2(self, x):
        """q(z2 | x): x (B, T, feature_dim) -> mean, logvar (B, z2_dim)."""
        return _gaussian(self.z2_out(_last_state(self.z2_lstm, x)))

    def posterior_z1(self, x, z2):
        """q(z1 | x, z2): z2 (B, z2_dim) is appended to every frame -> mean, logvar (B, z1_dim)."""
        z2_seq = z2.unsqueeze(1).expand(-1, x.shape[1], -1)
        return _gaussian(self.z1_out(_last_state(self.z1_lstm, torch.cat([x, z2_seq], dim=-1))))

    def encode(self, x):
        """Posterior means and log-variances, z1 conditioned on z2's mean: z1_mean, z1_logvar, z2_mean,
        z2_logvar, each (B, dim)."""
        z2_mean, z2_logvar = self.posterior_z2(x)
        z1_mean, z1_logvar = self.posterior_z1(x, z2_mean)
        return z1_mean, z1_logvar, z2_mean, z2_logvar

    # --- generation ----------------------------------------------------------------------------------

    def decode(self, z1, z2, length: int):
        """p(x_1:T | z1, z2): mean, logvar (B, T, feature_dim) for T = length frames."""
        codes = torch.cat([z1, z2], dim=-1).unsqueeze(1).expand(-1, length, -1)
        h, _ = self.x_lstm(codes)
        return _gaussian(self.x_out(h))

    # --- the objective -------------------------------------------------------------------------------

    def forward(self, x, sequence, n_segments, *, alpha: float = 0.0):
        """The negative discriminative lower bound, averaged over the batch, and its named terms.

        x: (B, T, feature_dim) segments; sequence: (B,) their rows in the mu2 table; n_segments: (B,) N_i,
        the number of training segments of each one's sequence. Terms are per-segment means (detached):
        recon (-log p(x | z1, z2)), kl_z1, kl_z2, log_p_mu2 (already divided by N_i), lower_bound (L),
        log_p_i (log p(i | z2bar)), seq_acc (how often z2bar is nearest its own mu2_i) and loss.
        """
        if self.config.n_sequences == 0:
            raise ValueError("this FHVAE has no mu2 table (n_sequences 0): it can encode but not train")
        z2_mean, z2_logvar = self.posterior_z2(x)
        z2 = sample(z2_mean, z2_logvar)
        z1_mean, z1_logvar = self.posterior_z1(x, z2)
        z1 = sample(z1_mean, z1_logvar)
        x_mean, x_logvar = self.decode(z1, z2, x.shape[1])

        mu2 = self.mu2[sequence]
        recon = (0.5 * ((x - x_mean).pow(2) * (-x_logvar).exp() + x_logvar + LOG_2PI)).flatten(1).sum(1)
        kl_z1 = gaussian_kl(z1_mean, z1_logvar).sum(1)
        prior_logvar = torch.full_like(mu2, 2.0 * math.log(Z2_PRIOR_STD))
        kl_z2 = gaussian_kl(z2_mean, z2_logvar, mu2, prior_logvar).sum(1)
        log_p_mu2 = _log_normal(mu2, 0.0, MU2_PRIOR_STD).sum(1) / n_segments.to(mu2.dtype)
        lower_bound = -recon - kl_z1 - kl_z2 + log_p_mu2

        log_p_i, seq_acc = self.sequence_log_posterior(z2_mean, sequence)
        loss = -(lower_bound + alpha * log_p_i).mean()
        terms = {"recon": recon.mean(), "kl_z1": kl_z1.mean(), "kl_z2": kl_z2.mean(),
                 "log_p_mu2": log_p_mu2.mean(), "lower_bound": lower_bound.mean(), "log_p_i": log_p_i.mean(),
                 "seq_acc": seq_acc, "loss": loss}
        return loss, {k: v.detach() for k, v in terms.items()}

    def sequence_log_posterior(self, z2bar, sequence):
        """log p(i | z2bar) over all training sequences (B,), and how often sequence i is the most likely.

        log p(z2bar | mu2_j) = -|z2bar - mu2_j|^2 / (2 sigma_z2^2) + const: the constant is the same for
        every j and cancels in the normalisation, so the log-softmax of the scaled distances is exact.
        """
        # |a - b|^2 expanded (cdist's gradient is undefined at distance 0, where every mu2 starts)
        squared = (z2bar.pow(2).sum(1, keepdim=True) - 2.0 * z2bar @ self.mu2.T
                   + self.mu2.pow(2).sum(1))                                # (B, n_sequences)
        log_p = torch.log_softmax(-squared / (2.0 * Z2_PRIOR_STD ** 2), dim=1)
        own = log_p.gather(1, sequence.unsqueeze(1)).squeeze(1)
        return own, (log_p.argmax(1) == sequence).float().mean()


def _log_normal(value, mean, std: float):
    """Elementwise log N(value; mean, std^2)."""
    return -0.5 * (((value - mean) / std) ** 2 + 2.0 * math.log(std) + LOG_2PI)


if __name__ == "__main__":
    from training.cli.fhvae import main
    sys.exit(main())
