"""--record: a WAV file of what is played, written while the session runs and renamed into place at the
end (through `vc.files.AtomicFile`), so the name never holds half a recording."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vc.files import AtomicFile
from vc.live.settings import LiveError


def check_record_path(path) -> Path:
    path = Path(path)
    if path.suffix.lower() != ".wav":
        raise LiveError(f"{path}: --record writes WAV files; use a name ending in .wav")
    if not path.parent.exists():
        raise LiveError(f"{path}: the folder {path.parent} does not exist")
    return path


class Recorder:
    def __init__(self, path, rate: int):
        import soundfile as sf

        self.path = check_record_path(path)
        self._file = AtomicFile(self.path)
        self._wav = sf.SoundFile(self._file.handle, mode="w", samplerate=int(rate), channels=1, subtype="FLOAT",
                                 format="WAV")

    def write(self, samples: np.ndarray) -> None:
        if samples.size:
            self._wav.write(samples)

    def close(self, keep: bool = True) -> None:
        """keep: rename the recording into place (also after a device failure: it is a complete WAV of what
        was played); otherwise remove it. Closing twice does nothing."""
        if self._wav is None:
            return
        self._wav.close()
        self._wav = None
        self._file.commit() if keep else self._file.discard()
