"""What conversion knows of the source speaker: their f, z's statistics over their speech and their pitch
register. Built from a whole utterance (files), updated as a stream runs (the engine), or taken from an
enrolment (`vc-enroll` of the person who will speak: known from the first word).
"""

from __future__ import annotations

import numpy as np

from vc.pitch import Register
from vc.speakers import Speaker
from vc.streaming_pitch import RunningRegister
from vc.z_statistics import PRIOR_FRAMES, CodeStats, RunningCodeStats


class SourceEstimate:
    """The source's f (mean over their speech windows), z statistics (over their speech frames, counted
    together with `prior_frames` at `prior`, the training speakers' or the target's) and register (running,
    or fixed by `fix_register`). Whatever `enrolled` holds is used instead of its estimate."""

    def __init__(self, *, f_dim: int, z_dim: int, prior: CodeStats | None = None,
                 enrolled: Speaker | None = None, prior_frames: int = PRIOR_FRAMES):
        self.prior, self.prior_frames = prior, int(prior_frames)
        self.enrolled = enrolled
        self._f_sum = np.zeros(f_dim, np.float64)
        self._f_windows = 0
        self._z = RunningCodeStats(z_dim)
        self._running_register = RunningRegister()
        self._fixed_register: Register | None = None
        self._register_fixed = False

    @classmethod
    def of_utterance(cls, speech_f: np.ndarray, speech_z: np.ndarray, f0: np.ndarray | None,
                     voiced: np.ndarray | None, *, prior: CodeStats | None = None,
                     enrolled: Speaker | None = None) -> "SourceEstimate":
        """From a whole utterance: f of its speech windows (n, f_dim), z of its speech frames (m, z_dim),
        its F0 track (None without harmonics)."""
        source = cls(f_dim=speech_f.shape[-1], z_dim=speech_z.shape[-1], prior=prior, enrolled=enrolled)
        source.add_windows(speech_f)
        source.add_frames(speech_z)
        source.fix_register(None if f0 is None else Register.of(f0, voiced))
        return source

    def add_windows(self, f: np.ndarray) -> None:
        """f of windows that hold speech, (n, f_dim)."""
        f = np.asarray(f, np.float64).reshape(-1, self._f_sum.shape[0])
        self._f_sum += f.sum(axis=0)
        self._f_windows += f.shape[0]

    def add_frames(self, z: np.ndarray) -> None:
        """z of frames that hold speech, (n, z_dim)."""
        self._z.update(z)

    def add_pitch(self, f0: np.ndarray, voiced: np.ndarray) -> None:
        self._running_register.update(f0, voiced)

    def fix_register(self, register: Register | None) -> None:
        self._fixed_register, self._register_fixed = register, True

    @property
    def f(self) -> np.ndarray | None:
        """None until a speech window has been seen."""
        if self.enrolled is not None:
            return self.enrolled.f
        return self._f_sum / self._f_windows if self._f_windows else None

    @property
    def z_stats(self) -> CodeStats | None:
        if self.enrolled is not None and self.enrolled.z_stats is not None:
            return self.enrolled.z_stats
        return self._z.estimate(self.prior, self.prior_frames)

    @property
    def register(self) -> Register | None:
        """None until enough voiced speech."""
        if self.enrolled is not None and self.enrolled.register is not None:
            return self.enrolled.register
        return self._fixed_register if self._register_fixed else self._running_register.current()
