"""The Disentangled Sequential Autoencoder (Li & Mandt, ICML 2018) for sequences of frames.

Generative model, for a sequence x_1:T:
    f ~ p(f) = N(0, I)                                  static code: who speaks
    z_t ~ p(z_t | z_<t) = N(mu_t, sigma_t^2)            dynamic codes from an LSTM prior
    x_t ~ p(x_t | z_t, f) = N(dec(z_t, f), sigma_x^2)   Gaussian frame decoder fed [z_t, f]

Dynamics (`dynamics`; the paper's comparison "stochastic vs deterministic dynamics"):
    "stochastic"   the prior above: the transition p(z_t | z_<t) is itself random (the paper's model)
    "lstm_f"       z_t ~ N(0, I) independently, and a deterministic state carries the dynamics:
                   h_0 = tanh(W f), h_t = LSTM(h_{t-1}, z_t), x_t ~ p(x_t | g(h_t), f)
    "lstm_c"       the same with h_0 = 0: the transition does not see f (like FHVAE, whose latents have
                   no transition at all); f reaches only the frame decoder
With a deterministic transition, all randomness of the dynamics is in the independent z_t: predicting a
missing frame means running h_t on with the prior's z_t, where the stochastic model runs its prior on.
For binary frames (bouncing balls, training.data.balls) `likelihood="bernoulli"` replaces the Gaussian
p(x_t | .): the decoder's output are logits, the frame's mean their sigmoid.

Inference model:
    q(f | x_1:T)          bidirectional LSTM over frame encodings
    q(z_t | x_t)          "factorised": a per-frame network
    q(z_1:T | x_1:T, f)   "full": bidirectional LSTM over [enc(x_t), f], then a forward RNN

ELBO = E_q[log p(x_1:T | z_1:T, f)] - KL(q(f) || p(f)) - sum_t E_q[KL(q(z_t | .) || p(z_t | z_<t))]

The KL of z is taken against the prior LSTM *teacher-forced with the posterior's samples* z_<t; feeding
the prior its own samples instead (as a popular public port does) gives a quantity that is not the ELBO.

Only the frame encoder and decoder know what a frame is: an MLP over a spectrum (`FrameEncoder`,
`FrameDecoder`, speech) or, with `frame_coder="conv64"`, convolutions over a 64x64 RGB image
(training.sprites.video, the Sprites video); everything else is shared.

Options on top of the paper's model, each a separately named and logged loss term; their weights belong to
the trainer (`training.config.Objective`, passed to `DSAE.forward`), the architecture to `DSAEConfig`:
  * `kl_z_weight`, `kl_f_weight`, `kl_warmup_steps`, `free_bits_z`: the usual beta / warm-up / free bits;
  * `f_swap_prob`: reconstruct segment A from z(A) and f inferred from *another segment B of the same
    speaker*, so f can only usefully carry what A and B share (the speaker), not what A says;
  * `adv_weight`: a speaker classifier on the time-averaged posterior mean of z, trained through a
    gradient-reversal layer, so that the encoder learns to strip speaker identity from z;
    `adv_group_size` > 1 feeds it the average over that many same-speaker segments instead;
  * `z_invariance_weight`: the trainer also passes a copy of each segment with the voice changed
    (training.augment: pitch, formants, tilt, level) and q(z | x, f) must agree with q(z | x', f): the
    symmetric KL between the two posteriors, in nats per sequence, is added to the loss. Information
    about the voice in z then costs nats on every segment, for speakers never seen as well;
  * `content_weight`: a head on z_t predicts what a speech recogniser's encoder makes of the same instant
    (training.data.content), half the squared error per sequence; the terms above push the speaker out
    of z and the words with it, this one keeps the words in;
  * `phone_keep_weight`: every segment is also decoded with the f of another segment in the batch (mostly
    another speaker: a conversion, which the ELBO never sees), and a frozen phone recogniser (a "judge",
    training.phones.PhoneJudge) must hear the same phones in it as in the segment itself: the KL between
    the two, summed over frames. The decoder learns to keep the phones when the voice changes;
  * `voice_reach_weight`: the same kind of conversion (the batch reversed, f moved all the way to the other
    segment's), encoded again by the f encoder with its weights held fixed, must give back the f it was
    decoded with: half the squared distance of the posterior means, per sequence (docs/experiments.md,
    "Stop 32"). The ELBO never asks a decoder to sound
    like another speaker over a z that is not theirs; at run time the target's exemplars do that, and cost
    words.

Why each option exists and what it measured: docs/experiments.md, "The DSAE objective".
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import nn
from torch.nn import functional as F

if TYPE_CHECKING:
    from training.config import Objective

VARIANTS = ("full", "factorised")
FRAME_CODERS = ("mlp", "conv64")
DYNAMICS = ("stochastic", "lstm_f", "lstm_c")
LIKELIHOODS = ("gaussian", "bernoulli")
LOG_2PI = math.log(2.0 * math.pi)


class Options:
    """Dict round trip of a config dataclass; an unknown key is an error naming the option kind."""
    option_kind: ClassVar[str] = "model"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict):
        reject_unknown_options(d, {f.name for f in dataclasses.fields(cls)}, cls.option_kind)
        return cls(**d)


@dataclass
class DSAEConfig(Options):
    """The architecture only: what shapes the network and names its parameters. The loss weights and
    their schedule are the trainer's (training.config.Objective), as nanoGPT keeps them out of GPTConfig."""
    feature_dim: int = 200
    f_dim: int = 64
    z_dim: int = 32
    hidden_dim: int = 256          # LSTM/RNN state size
    frame_hidden: int = 256        # width of the frame encoder/decoder MLPs (and of the frame encodings)
    variant: str = "full"
    # Decoder noise: "learned" = one log-variance per feature dimension, else a fixed log-variance.
    x_logvar: str | float = "learned"
    adv_hidden: int = 256          # width of the speaker adversary's hidden layer
    # Classes of the speaker adversary head on mean_t z; below 2 the model has no adversary. The trainer
    # sets the number of training speakers when the objective's adv_weight > 0, else 0.
    n_speakers: int = 0
    # What a frame is: "mlp" (a feature vector, speech) or "conv64" (a flattened 3x64x64 image, video;
    # training.sprites.video), with `conv_width` channels in the first convolution; `conv_film`: the code [z_t, f]
    # also modulates every decoder stage; `conv_norm_encodings`: the frame encodings are normalised before
    # their tanh (training.sprites.video).
    frame_coder: str = "mlp"
    conv_width: int = 16
    conv_film: bool = False
    conv_norm_encodings: bool = False
    # Width of the content targets that a head on z_t predicts (training.data.content: a speech
    # recogniser's encoder, frame by frame); 0: no head. Used by the objective's content_weight.
    content_dim: int = 0
    # The transition model (DYNAMICS, see the module docstring); configs and checkpoints written before it
    # existed are the paper's stochastic model, and build the same parameters.
    dynamics: str = "stochastic"
    # p(x_t | .): "gaussian" (mean = the decoder's output, variance x_logvar) or "bernoulli" (binary pixels:
    # the decoder's output are logits, its mean their sigmoid; x_logvar unused).
    likelihood: str = "gaussian"

    def __post_init__(self):
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, not {self.variant!r}")
        if self.dynamics not in DYNAMICS:
            raise ValueError(f"dynamics must be one of {DYNAMICS}, not {self.dynamics!r}")
        if self.likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {LIKELIHOODS}, not {self.likelihood!r}")
        if isinstance(self.x_logvar, str) and self.x_logvar != "learned":
            self.x_logvar = float(self.x_logvar)
        for name in ("feature_dim", "f_dim", "z_dim", "hidden_dim", "frame_hidden"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"{name} must be positive, not {getattr(self, name)}")
        if self.frame_coder not in FRAME_CODERS:
            raise ValueError(f"frame_coder must be one of {FRAME_CODERS}, not {self.frame_coder!r}")
        if self.frame_coder == "conv64" and int(self.feature_dim) != 3 * 64 * 64:
            raise ValueError(f"frame_coder conv64 needs feature_dim 12288 (3x64x64), not {self.feature_dim}")



def reject_unknown_options(given, known, kind: str) -> None:
    """A misspelt option in a config file is an error, not silently a default."""
    unknown = set(given) - set(known)
    if unknown:
        raise ValueError(f"unknown {kind} option(s): {sorted(unknown)}")


# ----------------------------------------------------------------------------- modality-specific parts

class FrameEncoder(nn.Module):
    """(B, T, feature_dim) -> (B, T, out_dim); frames are encoded independently."""

    def __init__(self, feature_dim: int, out_dim: int):
        super().__init__()
        self.out_dim = out_dim
        self.net = nn.Sequential(
            nn.Linear(feature_dim, out_dim), nn.LeakyReLU(0.2),
            nn.Linear(out_dim, out_dim), nn.LeakyReLU(0.2),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class FrameDecoder(nn.Module):
    """(B, T, in_dim) -> (B, T, feature_dim): the mean of p(x_t | z_t, f)."""

    def __init__(self, in_dim: int, hidden: int, feature_dim: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden), nn.LeakyReLU(0.2),
            nn.Linear(hidden, hidden), nn.LeakyReLU(0.2),
            nn.Linear(hidden, feature_dim),
        )

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.net(h)


# ----------------------------------------------------------------------------- helpers

class _GradientReversal(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -grad


@contextlib.contextmanager
def _weights_fixed(module: nn.Module):
    """Inside, the module's weights record no gradient (autograd builds its graph as ops run), while
    gradients still flow through it to its inputs."""
    params = [p for p in module.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def gaussian_kl(mean_q, logvar_q, mean_p=None, logvar_p=None):
    """Elementwise KL(N(mean_q, exp(logvar_q)) || N(mean_p, exp(logvar_p))); N(0, I) when p is None."""
    if mean_p is None:
        return 0.5 * (mean_q.pow(2) + logvar_q.exp() - 1.0 - logvar_q)
    return 0.5 * (logvar_p - logvar_q + (logvar_q.exp() + (mean_q - mean_p).pow(2)) / logvar_p.exp() - 1.0)


def sample(mean, logvar):
    return mean + torch.randn_like(mean) * (0.5 * logvar).exp()


def _split(params: torch.Tensor):
    mean, logvar = params.chunk(2, dim=-1)
    # Bounded log-variances keep exp() finite early in training without changing the optimum.
    return mean, logvar.clamp(-12.0, 8.0)


# ----------------------------------------------------------------------------- the model

class DSAE(nn.Module):
    def __init__(self, config: DSAEConfig, frame_encoder: nn.Module | None = None,
                 frame_decoder: nn.Module | None = None):
        super().__init__()
        c = self.config = config
        H, E = c.hidden_dim, c.frame_hidden
        if c.frame_coder == "conv64":
            from training.sprites.video import ConvFrameDecoder, ConvFrameEncoder
            frame_encoder = frame_encoder or ConvFrameEncoder(E, c.conv_width, c.conv_norm_encodings)
            frame_decoder = frame_decoder or ConvFrameDecoder(c.z_dim + c.f_dim, c.conv_width, film=c.conv_film)
        self.frame_encoder = frame_encoder or FrameEncoder(c.feature_dim, E)
        self.frame_decoder = frame_decoder or FrameDecoder(c.z_dim + c.f_dim, E, c.feature_dim)

        # q(f | x_1:T): final states of a bi-LSTM over the frame encodings.
        self.f_lstm = nn.LSTM(E, H, batch_first=True, bidirectional=True)
        self.f_out = nn.Linear(2 * H, 2 * c.f_dim)

        if c.variant == "full":
            # q(z_1:T | x_1:T, f): bi-LSTM over [enc(x_t), f], then a forward RNN.
            self.z_bilstm = nn.LSTM(E + c.f_dim, H, batch_first=True, bidirectional=True)
            self.z_rnn = nn.RNN(2 * H, H, batch_first=True)
            self.z_out = nn.Linear(H, 2 * c.z_dim)
        else:
            # q(z_t | x_t): per-frame network on the frame encoding.
            self.z_mlp = nn.Sequential(nn.Linear(E, H), nn.LeakyReLU(0.2))
            self.z_out = nn.Linear(H, 2 * c.z_dim)

        if c.dynamics == "stochastic":
            # p(z_t | z_<t): an LSTM fed z_{t-1} (z_0 = 0).
            self.prior_lstm = nn.LSTM(c.z_dim, H, batch_first=True)
            self.prior_out = nn.Linear(H, 2 * c.z_dim)
        else:
            # Deterministic transition h_t = LSTM(h_{t-1}, z_t); the decoder reads g(h_t), z_dim wide, in
            # place of z_t, so that the frame decoder is the same network under every dynamics.
            self.transition_lstm = nn.LSTM(c.z_dim, H, batch_first=True)
            self.transition_out = nn.Linear(H, c.z_dim)
            # LSTM-f: (h_0, c_0) from f; LSTM-c: zeros.
            self.transition_init = nn.Linear(c.f_dim, 2 * H) if c.dynamics == "lstm_f" else None

        if c.x_logvar == "learned":
            self.x_logvar = nn.Parameter(torch.zeros(c.feature_dim))
        else:
            self.register_buffer("x_logvar", torch.full((c.feature_dim,), float(c.x_logvar)))

        if c.n_speakers > 1:
            self.speaker_adversary = nn.Sequential(
                nn.Linear(c.z_dim, c.adv_hidden), nn.LeakyReLU(0.2), nn.Linear(c.adv_hidden, c.n_speakers))
        else:
            self.speaker_adversary = None

        # What was said, read from z_t alone: the head exists only for training and is not exported.
        self.content_head = nn.Sequential(
            nn.Linear(c.z_dim, H), nn.LeakyReLU(0.2), nn.Linear(H, c.content_dim)) if c.content_dim > 0 else None

    # --- inference -----------------------------------------------------------------------------------

    def encode_frames(self, x):
        return self.frame_encoder(x)

    def posterior_f(self, h):
        """h: (B, T, E) frame encodings -> mean, logvar (B, f_dim)."""
        _, (h_n, _) = self.f_lstm(h)
        return _split(self.f_out(torch.cat([h_n[0], h_n[1]], dim=-1)))

    def posterior_z(self, h, f):
        """h: (B, T, E), f: (B, f_dim) (ignored by the factorised variant) -> mean, logvar (B, T, z_dim)."""
        if self.config.variant == "full":
            f_seq = f.unsqueeze(1).expand(-1, h.shape[1], -1)
            g, _ = self.z_bilstm(torch.cat([h, f_seq], dim=-1))
            g, _ = self.z_rnn(g)
            return _split(self.z_out(g))
        return _split(self.z_out(self.z_mlp(h)))

    def encode(self, x):
        """Deterministic codes (posterior means; z of the full variant conditioned on f's mean).

        Returns f_mean, f_logvar (B, f_dim), z_mean, z_logvar (B, T, z_dim): the exported encoder.
        """
        h = self.encode_frames(x)
        f_mean, f_logvar = self.posterior_f(h)
        z_mean, z_logvar = self.posterior_z(h, f_mean)
        return f_mean, f_logvar, z_mean, z_logvar

    # --- generation ----------------------------------------------------------------------------------

    @property
    def stochastic(self) -> bool:
        return self.config.dynamics == "stochastic"

    def prior_z(self, z):
        """Teacher-forced prior: parameters of p(z_t | z_<t) for t = 1..T given z (B, T, z_dim).

        With a deterministic transition the z_t are independent N(0, I): (None, None), which gaussian_kl
        reads as the standard normal."""
        if not self.stochastic:
            return None, None
        z_prev = F.pad(z[:, :-1], (0, 0, 1, 0))
        s, _ = self.prior_lstm(z_prev)
        return _split(self.prior_out(s))

    def transition(self, z, f, state=None):
        """Deterministic dynamics: (g(h_1:T) (B, T, z_dim), final LSTM state) for h_t = LSTM(h_{t-1}, z_t),
        starting from `state` when given, else from h_0 (from f for LSTM-f, zero for LSTM-c)."""
        if state is None and self.transition_init is not None:
            h0, c0 = torch.tanh(self.transition_init(f)).chunk(2, dim=-1)
            state = (h0.unsqueeze(0).contiguous(), c0.unsqueeze(0).contiguous())
        h, state = self.transition_lstm(z, state)
        return self.transition_out(h), state

    def decoder_output(self, f, z):
        """The frame decoder's raw output for [code_t, f]: means (gaussian) or logits (bernoulli); the code is
        z_t itself (stochastic dynamics) or the deterministic state's g(h_t)."""
        code = z if self.stochastic else self.transition(z, f)[0]
        f_seq = f.unsqueeze(1).expand(-1, z.shape[1], -1)
        return self.frame_decoder(torch.cat([code, f_seq], dim=-1))

    def decode(self, f, z):
        """f: (B, f_dim), z: (B, T, z_dim) -> mean of p(x_t | z_1:t, f), (B, T, feature_dim)."""
        out = self.decoder_output(f, z)
        return torch.sigmoid(out) if self.config.likelihood == "bernoulli" else out

    @torch.no_grad()
    def generate(self, batch: int, length: int, f=None):
        """Ancestral sampling from the generative model (the prior LSTM fed its own samples; independent
        N(0, I) codes under a deterministic transition)."""
        device = self.z_out.weight.device
        if f is None:
            f = torch.randn(batch, self.config.f_dim, device=device)
        if not self.stochastic:
            return self.decode(f, torch.randn(batch, length, self.config.z_dim, device=device))
        return self.decode(f, self.roll_prior(torch.zeros(batch, 0, self.config.z_dim, device=device), length))

    @torch.no_grad()
    def roll_prior(self, z_seen, steps: int, *, use_mean: bool = False):
        """The stochastic prior run on after the codes z_seen (B, T0, z_dim, T0 may be 0): `steps` more codes,
        (B, steps, z_dim), each drawn from p(z_t | z_<t) fed the previous one (its mean with use_mean)."""
        z_prev = F.pad(z_seen, (0, 0, 1, 0))         # z_0 = 0, then the seen codes
        s, state = self.prior_lstm(z_prev)
        zs = [z_seen[:, :0]]                          # steps = 0: no codes, with the right shape
        for _ in range(steps):
            mean, logvar = _split(self.prior_out(s[:, -1:]))
            zs.append(mean if use_mean else sample(mean, logvar))
            s, state = self.prior_lstm(zs[-1], state)
        return torch.cat(zs, dim=1)

    @torch.no_grad()
    def predict_missing(self, x_seen, missing: int, *, use_mean: bool = True):
        """Frames x_seen (B, T0, feature_dim) observed, the next `missing` unseen: the mean of p(x_t | .) for
        all T0 + missing frames, (B, T0 + missing, feature_dim).

        f and z_1:T0 are the posterior means given the seen frames only. The missing codes come from the
        generative model: the stochastic prior run on from z_1:T0, or, under a deterministic transition,
        the independent prior's mean (0) or samples of it, with h_t carried on deterministically from the
        seen codes. use_mean: the prior's mean at each step instead of a sample."""
        f, _, z_seen, _ = self.encode(x_seen)
        batch, device = x_seen.shape[0], x_seen.device
        if self.stochastic:
            z_new = self.roll_prior(z_seen, missing, use_mean=use_mean)
        else:
            z_new = torch.zeros(batch, missing, self.config.z_dim, device=device)
            z_new = z_new if use_mean else torch.randn_like(z_new)
        return self.decode(f, torch.cat([z_seen, z_new], dim=1))

    # --- the objective -------------------------------------------------------------------------------

    def reconstruction_nll(self, x, x_out):
        """-log p(x_1:T | z, f) per sequence, summed over time and features; x_out is the decoder's raw
        output (decoder_output: means, or logits under the Bernoulli likelihood)."""
        if self.config.likelihood == "bernoulli":
            return F.binary_cross_entropy_with_logits(x_out, x, reduction="none").flatten(1).sum(1)
        x_mean, logvar = x_out, self.x_logvar
        nll = 0.5 * ((x - x_mean).pow(2) * (-logvar).exp() + logvar + LOG_2PI)
        return nll.flatten(1).sum(1)

    def forward(self, x, partner=None, speaker=None, step: int = 0, x_changed=None, *,
                objective: "Objective | None" = None, content=None, judge=None, speaker_judge=None):
        """Training loss and its named terms for a batch.

        x: (B, T, feature_dim). partner: (B, T', feature_dim) segments of the same speakers as x, used for
        f when the objective's `f_swap_prob` > 0. speaker: (B,) training-speaker indices, used by the
        adversary. x_changed: x with the voice changed (same content), used when `z_invariance_weight` > 0.
        content: (B, T, content_dim) targets of what is said at each frame, used when `content_weight` > 0.
        judge: normalised frames (B, T, feature_dim) -> phone log-probabilities (B, T, P), frozen; used when
        `phone_keep_weight` > 0. speaker_judge: normalised frames -> log-probabilities of the training
        speakers (B, n_speakers), frozen; used with `speaker` when `voice_judge_weight` > 0.
        objective: the trainer's loss weights and schedule (training.config.Objective; None: the plain
        negative ELBO). Returns (loss, terms): terms hold per-sequence means of each term (detached) and
        `elbo`.
        """
        if objective is None:
            from training.config import Objective
            objective = Objective()
        h = self.encode_frames(x)
        f_mean, f_logvar = self.posterior_f(h)
        f = sample(f_mean, f_logvar)
        if partner is not None and objective.f_swap_prob > 0:
            f_mean, f_logvar, f = self._swap_f(partner, objective.f_swap_prob, f_mean, f_logvar, f)

        z_mean, z_logvar = self.posterior_z(h, f)
        z = sample(z_mean, z_logvar)
        prior_mean, prior_logvar = self.prior_z(z)

        # The paper's ELBO, term by term (per sequence).
        recon = self.reconstruction_nll(x, self.decoder_output(f, z))
        kl_f = gaussian_kl(f_mean, f_logvar).sum(1)
        kl_z_elem = gaussian_kl(z_mean, z_logvar, prior_mean, prior_logvar)   # (B, T, z_dim)
        kl_z = kl_z_elem.flatten(1).sum(1)
        elbo = -(recon + kl_f + kl_z)

        if objective.free_bits_z > 0:
            # Free bits per dimension, on the batch- and time-averaged KL (Kingma et al. 2016).
            per_dim = kl_z_elem.mean(dim=(0, 1))
            kl_z_penalised = torch.clamp(per_dim, min=objective.free_bits_z).sum() * x.shape[1]
        else:
            kl_z_penalised = kl_z.mean()
        loss = recon.mean() + objective.kl_weight(step) * (
            objective.kl_f_weight * kl_f.mean() + objective.kl_z_weight * kl_z_penalised)

        terms = {"recon": recon.mean(), "kl_f": kl_f.mean(), "kl_z": kl_z.mean(), "elbo": elbo.mean()}
        if self.speaker_adversary is not None and speaker is not None and objective.adv_weight > 0:
            adv_ce, terms["adv_acc"] = self._adversary(z_mean, speaker, objective.adv_group_size)
            loss = loss + objective.adv_weight * adv_ce
            terms["adv_ce"] = adv_ce
        if x_changed is not None and objective.z_invariance_weight > 0:
            z_inv = self._invariance(x_changed, f, z_mean, z_logvar)
            loss = loss + objective.z_invariance_weight * z_inv
            terms["z_inv"] = z_inv
        if content is not None and self.content_head is not None and objective.content_weight > 0:
            content_err = self._content_error(z, content)
            loss = loss + objective.content_weight * content_err
            terms["content"] = content_err
        if judge is not None and objective.phone_keep_weight > 0:
            phones_lost = self._converted_phones(x, z, f, judge, objective.phone_keep_strengths)
            loss = loss + objective.phone_keep_weight * phones_lost
            terms["phones_lost"] = phones_lost
        if objective.voice_reach_weight > 0:
            voice_missed = self._voice_missed(z, f_mean)
            loss = loss + objective.voice_reach_weight * voice_missed
            terms["voice_missed"] = voice_missed

        if speaker_judge is not None and speaker is not None and objective.voice_judge_weight > 0:
            voice_unheard, terms["judge_acc"] = self._voice_unheard(z, f_mean, speaker, speaker_judge)
            loss = loss + objective.voice_judge_weight * voice_unheard
            terms["voice_unheard"] = voice_unheard

        terms["loss"] = loss
        return loss, {k: v.detach() for k, v in terms.items()}

    def _swap_f(self, partner, swap_prob: float, f_mean, f_logvar, f):
        """With probability swap_prob per segment, f and its posterior come from the same-speaker partner."""
        fp_mean, fp_logvar = self.posterior_f(self.encode_frames(partner))
        swap = torch.rand(f.shape[0], 1, device=f.device) < swap_prob
        return (torch.where(swap, fp_mean, f_mean), torch.where(swap, fp_logvar, f_logvar),
                torch.where(swap, sample(fp_mean, fp_logvar), f))

    def _adversary(self, z_mean, speaker, group_size: int):
        """Cross-entropy and accuracy of the speaker classifier on mean_t z, through gradient reversal."""
        z_avg = z_mean.mean(dim=1)
        k = group_size
        if k > 1 and z_avg.shape[0] % k == 0:
            # consecutive runs of k segments share a speaker (see training.dataset.grouped_order)
            z_avg, speaker = z_avg.view(-1, k, self.config.z_dim).mean(1), speaker[::k]
        logits = self.speaker_adversary(_GradientReversal.apply(z_avg))
        return F.cross_entropy(logits, speaker), (logits.argmax(1) == speaker).float().mean()

    def _invariance(self, x_changed, f, z_mean, z_logvar):
        """Symmetric KL between q(z | x, f) and q(z | x_changed, f), nats per sequence."""
        zc_mean, zc_logvar = self.posterior_z(self.encode_frames(x_changed), f)
        return 0.5 * (gaussian_kl(z_mean, z_logvar, zc_mean, zc_logvar)
                      + gaussian_kl(zc_mean, zc_logvar, z_mean, z_logvar)).flatten(1).sum(1).mean()

    def _content_error(self, z, content):
        """Half the squared error of the content head's prediction from z_t, summed over frames and
        dimensions, per sequence: the targets have unit variance per dimension, so predicting their mean
        costs content_dim / 2 per frame."""
        return 0.5 * (self.content_head(z) - content).pow(2).flatten(1).sum(1).mean()

    def _converted_phones(self, x, z, f, judge, strengths=(1.0, 1.0)):
        """KL(what the judge hears in x || what it hears in x decoded with f moved towards another segment's),
        nats summed over frames, per sequence. The batch reversed gives each segment another's f, and f moves
        a random share of the way, drawn from `strengths` (1: the other's f itself; the runtime goes past it).
        f is detached, so the term shapes the decoder and z, and f stays what the ELBO makes it."""
        with torch.no_grad():
            heard = judge(x)
        low, high = strengths
        share = low + (high - low) * torch.rand(f.shape[0], 1, device=f.device)
        f = f.detach()
        converted = judge(self.decode(f + share * (f.flip(0) - f), z))
        return (heard.exp() * (heard - converted)).sum(-1).sum(1).mean()

    def _voice_missed(self, z, f_mean):
        """Half the squared distance between each segment's other f (the batch reversed) and what the f
        encoder finds in the segment's z decoded with it, per sequence. The encoder is read with its weights
        held fixed, so the term can only move the decoder (and z), not teach the encoder to read f off
        whatever the decoder writes."""
        wanted = f_mean.detach().flip(0)
        converted = self.decode(wanted, z)
        with _weights_fixed(self):
            found, _ = self.posterior_f(self.encode_frames(converted))
        return 0.5 * (found - wanted).pow(2).sum(1).mean()

    def _voice_unheard(self, z, f_mean, speaker, speaker_judge):
        """Cross-entropy (nats per sequence) with which the frozen speaker recogniser hears each segment's z
        decoded with the other segment's f (the batch reversed) as that other segment's speaker, and how
        often it names them. f is detached, as in the voice-reach term: the decoder and z must do it."""
        wanted = speaker.flip(0)
        heard = speaker_judge(self.decode(f_mean.detach().flip(0), z))
        return F.nll_loss(heard, wanted), (heard.argmax(1) == wanted).float().mean()

    @torch.no_grad()
    def elbo_terms(self, x):
        """The paper's ELBO terms (no options) for evaluation; one posterior sample."""
        h = self.encode_frames(x)
        f_mean, f_logvar = self.posterior_f(h)
        f = sample(f_mean, f_logvar)
        z_mean, z_logvar = self.posterior_z(h, f)
        z = sample(z_mean, z_logvar)
        prior_mean, prior_logvar = self.prior_z(z)
        recon = self.reconstruction_nll(x, self.decoder_output(f, z))
        kl_f = gaussian_kl(f_mean, f_logvar).sum(1)
        kl_z = gaussian_kl(z_mean, z_logvar, prior_mean, prior_logvar).flatten(1).sum(1)
        return {"recon": recon, "kl_f": kl_f, "kl_z": kl_z, "elbo": -(recon + kl_f + kl_z)}
