"""The conversion itself, one function for files and streams: `convert_frames` takes the encoder's z of
the frames' windows and returns the converted log-magnitude frames; `vc.conversion` calls it once per
utterance, `vc.engine` once per hop. README, "How a voice is converted", lists the stages in order.

How windows map onto frames is the caller's `layout`: `EncodedWindows` (an utterance cut into overlapping
windows of the model's segment length, decoded and cross-faded), `BlendedFrames` (a stream's windows,
cross-faded the same way as they arrive) or `NewestFrames` (a stream's newest window, of which only the
frames of the newest hop are kept: the low-latency engine).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import numpy as np

from vc.levels import frame_power
from vc.exemplars import (VoicedExemplars, draw_onto_exemplars, envelope_coefficients, fit_envelope_map,
                          stretch_along_frequency, voiced_fine_structure)
from vc.model import Model
from vc.pitch import SPLIT_BINS, Register, harmonic_fine_structure, smooth_across_frequency, transpose
from vc.settings import DEFAULTS, ConversionSettings
from vc.source import SourceEstimate
from vc.speakers import Speaker
from vc.z_statistics import CodeStats, move_codes

MODEL_BATCH = 256  # windows per model call: bounds memory on long files


def _window_weights(length: int, hop: int) -> np.ndarray:
    """Blend weights: flat in the middle, raised-cosine ramps over the (length - hop) frames shared with
    each neighbour, so two overlapping windows cross-fade and sum to one. Never zero (every frame of a
    window counts a little, which keeps the normalisation defined at the utterance's ends)."""
    overlap = length - hop
    w = np.ones(length, np.float64)
    if overlap > 0:
        ramp = np.sin(0.5 * np.pi * (np.arange(overlap) + 0.5) / overlap) ** 2
        w[:overlap] = ramp
        w[length - overlap:] = np.minimum(w[length - overlap:], ramp[::-1])
    return w.astype(np.float32)


@dataclass
class EncodedWindows:
    """An utterance's overlapping model windows, encoded: window k covers frames starts[k] to
    starts[k] + length - 1 of the silence-padded utterance."""

    starts: np.ndarray     # (n,) first frame of each window
    f_mean: np.ndarray     # (n, f_dim)
    z_mean: np.ndarray     # (n, length, z_dim)
    hop: int
    n_frames: int          # T, before padding
    length: int            # the model's segment length

    @property
    def own_f(self) -> np.ndarray:
        """f averaged over every window: the source's code when no window holds speech."""
        return self.f_mean.astype(np.float64).mean(axis=0)

    def speech_f(self, segment_speech: np.ndarray) -> np.ndarray:
        """f of the windows that are whole speech segments (flags per segment k = frames k*L to k*L + L - 1,
        as enrolment measures a speaker)."""
        return self.f_mean[np.isin(self.starts, np.flatnonzero(segment_speech) * self.length)]

    def speech_z(self, frame_speech: np.ndarray) -> np.ndarray:
        """z of the speech frames (flags per frame), each counted once in every window that holds it."""
        t = self.starts[:, None] + np.arange(self.length)[None, :]
        inside = t < self.n_frames
        return self.z_mean[inside & frame_speech[np.minimum(t, self.n_frames - 1)]]

    def decode(self, model: Model, code: np.ndarray, z: np.ndarray, part: str = "converted") -> np.ndarray:
        """Every window's z decoded with speaker code `code`, cross-faded -> raw frames (T, n_features)."""
        return self.blend(decoded_in_batches(model, code, z))

    def per_frame(self, z: np.ndarray) -> np.ndarray:
        """Per-window z (n, length, z_dim) -> one per frame (T, z_dim), cross-faded as `decode` does."""
        return self.blend(iter([z]))

    def blend(self, batches) -> np.ndarray:
        """Per-window values (n, length, D), given as consecutive batches (so a long file need not hold every
        decoded window at once), cross-faded into one row per frame (T, D)."""
        L = self.length
        weights = _window_weights(L, self.hop) if self.starts.shape[0] > 1 else np.ones(L, np.float32)
        padded_T = int(self.starts[-1]) + L
        acc = wsum = None
        done = 0
        for values in batches:
            if acc is None:
                acc = np.zeros((padded_T, values.shape[-1]), np.float32)
                wsum = np.zeros(padded_T, np.float32)
            for start, window in zip(self.starts[done:done + values.shape[0]], values * weights[None, :, None]):
                acc[start:start + L] += window
                wsum[start:start + L] += weights
            done += values.shape[0]
        return acc[:self.n_frames] / wsum[:self.n_frames, None]


def encode_windows(frames: np.ndarray, model: Model, window_hop: int | None = None) -> EncodedWindows:
    """Raw log-magnitude frames (T, n_features) -> the posterior means of windows of the model's segment
    length that start every `window_hop` frames (default: half a segment)."""
    L = model.segment_length
    T = frames.shape[0]
    hop = max(1, L // 2) if window_hop is None else int(window_hop)
    if not 1 <= hop <= L:
        raise ValueError(f"window_hop must be between 1 and the segment length {L}, not {window_hop}")
    n_windows = 1 if T <= L else int(np.ceil((T - L) / hop)) + 1
    floor = np.float32(np.log(model.feature_config.log_floor))
    x = np.full(((n_windows - 1) * hop + L, frames.shape[1]), floor, np.float32)  # padding is silence
    x[:T] = frames
    x = model.normalise(x)
    starts = np.arange(n_windows) * hop
    idx = starts[:, None] + np.arange(L)[None, :]
    f_means, z_means = [], []
    for b in range(0, n_windows, MODEL_BATCH):
        f_mean, _, z_mean, _ = model.encode(x[idx[b:b + MODEL_BATCH]])
        f_means.append(f_mean)
        z_means.append(z_mean)
    return EncodedWindows(starts, np.concatenate(f_means), np.concatenate(z_means), hop, T, L)


def decoded_in_batches(model: Model, code: np.ndarray, z: np.ndarray):
    """Windows' z (n, length, z_dim) decoded with speaker code `code`, MODEL_BATCH windows at a time ->
    raw frames (batch, length, n_features), batch after batch."""
    for b in range(0, z.shape[0], MODEL_BATCH):
        batch = z[b:b + MODEL_BATCH]
        yield model.denormalise(model.decode(np.broadcast_to(code, (batch.shape[0], code.shape[0])), batch))


def decode_windows(windows: EncodedWindows, code: np.ndarray, model: Model) -> np.ndarray:
    """Decode every window with speaker code `code` and blend the overlaps -> raw frames (T, n_features)."""
    return windows.decode(model, code, windows.z_mean)


@dataclass
class NewestFrames:
    """A stream's hop: one encoder window over the newest frames, of which the newest `n` are converted."""

    n: int
    own_f: np.ndarray   # the window's own f: the source's code until a speech window has been heard

    def decode(self, model: Model, code: np.ndarray, z: np.ndarray, part: str = "converted") -> np.ndarray:
        return model.denormalise(model.decode(code[None], z)[0, -self.n:])

    def per_frame(self, z: np.ndarray) -> np.ndarray:
        return z[0, -self.n:]


class BlendedFrames:
    """A stream's windows cross-faded as the file path blends its windows (`EncodedWindows.blend`, same
    weights): each hop's window, the newest `length` frames, is decoded whole and added to what the earlier
    windows gave its frames; its oldest `n` (= hop) frames, which no later window holds, are final and
    converted. So a frame comes out `length - n` frames later than with `NewestFrames`, decoded with past
    and future context as in a file, and no window's edge is heard. One per stream: between hops it keeps
    the open frames of each decoded quantity (`part`: one per code `convert_frames` decodes with, and z)."""

    def __init__(self, length: int, hop: int):
        if not 1 <= hop <= length:
            raise ValueError(f"hop must be between 1 and the window's {length} frames, not {hop}")
        self.length, self.n = length, hop
        self.weights = _window_weights(length, hop)
        self.own_f = None
        self._open: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def next_window(self, own_f: np.ndarray) -> "BlendedFrames":
        """The layout of the next hop, whose window has its own f `own_f`."""
        self.own_f = own_f
        return self

    def _final(self, part: str, values: np.ndarray) -> np.ndarray:
        L, n = self.length, self.n
        acc, wsum = self._open.get(part) or (np.zeros((L, values.shape[-1]), np.float32), np.zeros(L, np.float32))
        acc = acc + values * self.weights[:, None]
        wsum = wsum + self.weights
        self._open[part] = (np.concatenate([acc[n:], np.zeros((n, acc.shape[1]), np.float32)]),
                            np.concatenate([wsum[n:], np.zeros(n, np.float32)]))
        return acc[:n] / wsum[:n, None]

    def decode(self, model: Model, code: np.ndarray, z: np.ndarray, part: str = "converted") -> np.ndarray:
        return self._final(part, model.denormalise(model.decode(code[None], z)[0]))

    def per_frame(self, z: np.ndarray) -> np.ndarray:
        return self._final("z", np.asarray(z[0], np.float32))


def mixed_code(source_f: np.ndarray, target_f: np.ndarray, amount: float) -> np.ndarray:
    """The f the decoder gets: source_f + amount * (target_f - source_f); exactly the target's at 1."""
    if amount == 1.0:
        return target_f
    source_f = np.asarray(source_f, np.float64)
    return (source_f + amount * (target_f - source_f)).astype(np.float32)


def source_prior(model: Model, target: CodeStats | None) -> CodeStats | None:
    """Where the estimate of the source's z statistics starts: the training speakers' statistics when the
    model file carries them (an unheard source is an average speaker), else the target's own (no move
    until the source has spoken)."""
    return model.z_population or target


def convert_frames(z: np.ndarray, layout, *, model: Model, target: Speaker, source: SourceEstimate,
                   settings: ConversionSettings, speech: np.ndarray,
                   pitch: tuple[np.ndarray, np.ndarray] | None = None, source_frames: np.ndarray | None = None,
                   phone_keys: np.ndarray | None = None, source_at_pitch=None,
                   phase: float = 0.0) -> tuple[np.ndarray, float]:
    """The encoder's z of the frames' windows -> (converted raw log-magnitude frames (T, n_features), the
    pulse train's phase after them). Each stage moves `settings.amounts` of the way to the target, so at
    strength 0 nothing of the target is used.

    layout: `EncodedWindows`, `NewestFrames` or `BlendedFrames`. speech: (T,) flags of the frames. pitch: their F0 and
    voicing (harmonics on). source_frames: the raw frames themselves (fine_structure "source", the
    level the output follows, and the pauses with `settings.pauses` "source"). phone_keys: their
    `vc.phones` keys (exemplars matched by phones).
    source_at_pitch(rows, ratio): the source's fine structure at those frames with the pitch moved by
    `ratio` (`vc.excitation`; fine_structure "source"; without it the source's is stretched along frequency).
    phase: where the pulse train goes on (a stream)."""
    amounts = settings.amounts
    own_code = source.f if source.f is not None else layout.own_f
    code = mixed_code(own_code, target.f, amounts.f)
    detail = None
    if settings.source_detail and source_frames is not None:
        detail = settings.source_detail * (smooth_across_frequency(source_frames)
                                           - smooth_across_frequency(layout.decode(model, own_code, z, part="own")))
    if target.z_stats is not None:
        z = move_codes(z, source.z_stats, target.z_stats, amounts.z)
    frames = layout.decode(model, code, z)
    if target.envelopes is not None:
        frames = draw_onto_exemplars(frames, target.envelopes, speech, k=settings.envelopes_per_frame,
                                     amount=amounts.envelope,
                                     envelope_map=target_envelope_map(model, target) if settings.envelope_prediction else None,
                                     prediction=settings.envelope_prediction,
                                     **_exemplar_keys(settings, target, lambda: layout.per_frame(z), phone_keys))
    if detail is not None:
        frames = frames + detail
    if settings.formant_emphasis:
        frames = emphasise_formants(frames, speech, settings.formant_emphasis)
    if settings.harmonics and pitch is not None:
        f0, voiced = pitch
        # Where the target gives no fine structure and the pitch stays (strength 0, or a bare code), "target"
        # keeps the source's own, unstretched, rather than a pulse train: the source's own voice through the
        # decoder's envelope.
        nothing_of_target = ((not amounts.target_fine or target.voiced is None)
                             and (amounts.register == 0 or target.register is None))
        own_fine = settings.fine_structure == "source" or (settings.fine_structure == "target"
                                                           and nothing_of_target and source_frames is not None)
        frames, phase = rebuild_harmonics(
            frames, f0, voiced, source=source.register, target=target.register, cfg=model.feature_config,
            phase=phase, voiced_exemplars=target.voiced if amounts.target_fine else None,
            near=settings.voiced_candidates, fine_per_frame=settings.fine_exemplars, amount=amounts.register,
            envelope_bins=settings.envelope_bins,
            source_fine=fine_structure_of(source_frames) if own_fine else None,
            source_at_pitch=source_at_pitch if settings.fine_structure == "source" else None,
            target_share=amounts.target_fine)
    if settings.follow_level and source_frames is not None:
        frames = follow_source_level(frames, source_frames, model.feature_config, amount=settings.follow_level)
    if settings.pauses == "source" and source_frames is not None:
        frames = keep_source_pauses(frames, source_frames, speech)
    return frames, phase


def keep_source_pauses(frames: np.ndarray, source_frames: np.ndarray, speech: np.ndarray) -> np.ndarray:
    """Converted raw frames (T, n_features) -> the same with every frame that holds no speech replaced by the
    source's own: a pause keeps the room it was recorded in instead of the decoder's murmur. The speech gate
    (`vc.levels.is_speech`) also leaves out the quietest edges of words (a fading vowel, a soft release), which
    then come in the source's voice."""
    return np.where(np.asarray(speech, bool)[:, None], frames, source_frames).astype(np.float32, copy=False)


_envelope_maps: dict = {}   # (id(model), id(f), id(envelope_z)) -> (weak references to the three, the map)


def target_envelope_map(model: Model, target: Speaker) -> np.ndarray | None:
    """The target's `fit_envelope_map`: its enrolment frames' z (envelope_z) decoded with its own code, against
    those frames' real envelopes; None for a speaker file without them. Computed once per model and speaker
    (about 40 ms of one thread for 3000 frames), so a stream's hops and a batch's files reuse it."""
    if target.envelopes is None or target.envelope_z is None:
        return None
    key = (id(model), id(target.f), id(target.envelope_z))
    held = _envelope_maps.get(key)
    if held is not None and all(ref() is obj for ref, obj in zip(held[0], (model, target.f, target.envelope_z))):
        return held[1]
    codes = np.asarray(target.envelope_z, np.float32)
    length = model.segment_length
    padded = np.concatenate([codes, np.zeros(((-codes.shape[0]) % length, codes.shape[1]), np.float32)])
    windows = padded.reshape(-1, length, codes.shape[1])
    decoded = np.concatenate(list(decoded_in_batches(model, target.f, windows)))
    decoded = decoded.reshape(-1, model.n_features)[:codes.shape[0]]
    envelope_map = fit_envelope_map(envelope_coefficients(decoded), target.envelopes)
    if len(_envelope_maps) >= 16:
        _envelope_maps.clear()
    _envelope_maps[key] = ((weakref.ref(model), weakref.ref(target.f), weakref.ref(target.envelope_z)), envelope_map)
    return envelope_map


def _exemplar_keys(settings: ConversionSettings, target: Speaker, frame_z, phone_keys) -> dict:
    """What the envelopes are matched by: nothing (by envelope), z, or the phone keys (alone, or ranking the
    nearest by envelope)."""
    if settings.exemplar_match == "z" and target.envelope_z is not None:
        return {"codes": frame_z(), "exemplar_codes": target.envelope_z}
    if settings.matches_by_phones and target.envelope_phones is not None and phone_keys is not None:
        ranked = settings.exemplar_match == "envelope+phones"
        return {"codes": phone_keys, "exemplar_codes": target.envelope_phones,
                "candidates": settings.voiced_candidates if ranked else None}
    return {}


TILT_BINS = 25   # about 1 kHz at 16 kHz and 400-point frames: wider than a formant, narrower than their spacing


def emphasise_formants(frames: np.ndarray, speech: np.ndarray, amount: float) -> np.ndarray:
    """Raw frames (T, n_features) -> the same with each speech frame's envelope moved `amount` further from
    its spectral tilt: peaks (formants) rise and valleys fall, the tilt and the fine structure stay."""
    if not np.any(speech):
        return frames
    envelope = smooth_across_frequency(frames[speech])
    out = np.array(frames, np.float32, copy=True)
    out[speech] += amount * (envelope - smooth_across_frequency(frames[speech], bins=TILT_BINS))
    return out


def follow_source_level(frames: np.ndarray, source_frames: np.ndarray, cfg, *, amount: float = 1.0) -> np.ndarray:
    """Converted raw frames (T, n_features) -> the same with each frame's level moved `amount` of the way to
    its source frame's, so the conversion rises and falls with the syllables it was made from, silences
    included."""
    gap = 0.5 * (np.log(frame_power(source_frames, cfg) + 1e-20) - np.log(frame_power(frames, cfg) + 1e-20))
    return (frames + (amount * gap)[:, None]).astype(np.float32)


def fine_structure_of(frames: np.ndarray) -> np.ndarray:
    """Raw log-magnitude frames -> their fine structure: the log spectrum less its envelope."""
    frames = np.asarray(frames, np.float32)
    return frames - smooth_across_frequency(frames)


def rebuild_harmonics(envelope: np.ndarray, f0: np.ndarray, voiced: np.ndarray, *, source: Register | None,
                      target: Register | None, cfg, phase: float = 0.0,
                      voiced_exemplars: VoicedExemplars | None = None, near: int = DEFAULTS.voiced_candidates,
                      fine_per_frame: int = DEFAULTS.fine_exemplars, amount: float = 1.0,
                      source_fine: np.ndarray | None = None, source_at_pitch=None,
                      target_share: float = 0.0,
                      envelope_bins: int = DEFAULTS.envelope_bins) -> tuple[np.ndarray, float]:
    """Decoded frames (T, n_features) and the source's F0 track of the same frames -> (frames with the
    harmonics of that contour moved `amount` of the way from the `source` register to the `target` register
    (the source's own when target is None), the pulse train's phase after the last frame).

    The harmonics are the target's own fine structure when `voiced_exemplars` holds it
    (`vc.exemplars.voiced_fine_structure`: the mean of the `fine_per_frame` nearest in F0 among the `near`
    nearest envelopes; the envelope under them smoothed over `envelope_bins` frequency bins), else a pulse
    train's. `source_fine`, the source's own fine structure of the same
    frames, replaces both: stretched
    to the moved F0 in voiced frames (or analysed there again by `source_at_pitch(rows, ratio)`), with
    `target_share` of the target's own blended in where `voiced_exemplars` holds it, unchanged in the
    others. A source register of None (no voiced speech
    yet) leaves the envelope as it is. `phase` continues a stream."""
    if source is None:
        return envelope, phase
    goal = target or source
    if amount != 1.0:
        goal = Register(source.log_mean + amount * (goal.log_mean - source.log_mean),
                        source.log_std * (goal.log_std / source.log_std) ** amount)
    moved = transpose(f0, voiced, source, goal)
    # The source's own fine structure was cut with the 9-bin split and goes back onto the same; the narrower
    # envelope was measured under the target's (stop 44), not under a pulse train.
    targets_own = source_fine is None and voiced_exemplars is not None
    smooth = smooth_across_frequency(envelope, bins=envelope_bins if targets_own else SPLIT_BINS)
    if source_fine is not None:
        fine = np.array(source_fine, np.float32, copy=True)
        ratio = moved[voiced] / f0[voiced]
        if source_at_pitch is not None:
            fine[voiced] = source_at_pitch(np.flatnonzero(voiced), ratio)
        else:
            fine[voiced] = stretch_along_frequency(fine[voiced], ratio, cfg)
        if voiced_exemplars is not None and target_share > 0:
            theirs = voiced_fine_structure(smooth, moved, voiced, voiced_exemplars, cfg, near=near,
                                           per_frame=fine_per_frame)
            fine[voiced] = (1.0 - target_share) * fine[voiced] + target_share * theirs[voiced]
    elif voiced_exemplars is not None:
        fine = voiced_fine_structure(smooth, moved, voiced, voiced_exemplars, cfg, near=near, per_frame=fine_per_frame)
    else:
        fine, phase = harmonic_fine_structure(moved, voiced, cfg, phase)
    return smooth + fine, phase


def synthesise(frames: np.ndarray, cfg, *, length: int, n_iter: int, momentum: float) -> np.ndarray:
    """Raw log-magnitude frames (T, n_features) -> float32 audio of `length` samples: the magnitude
    (DC restored) through fast Griffin-Lim from a PGHI start, once over the whole utterance."""
    from vc.dsp import griffinlim, magnitude_from_features

    mag = magnitude_from_features(frames, cfg=cfg)
    y = griffinlim(mag, n_iter=n_iter, momentum=momentum, init="pghi", hop_length=cfg.hop_length,
                   win_length=cfg.win_length, n_fft=cfg.n_fft, window=cfg.window, center=cfg.center,
                   length=length)
    return np.asarray(y, dtype=np.float32)
