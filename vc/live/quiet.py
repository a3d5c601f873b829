"""Keeping ALSA's and PortAudio's own diagnostics off the terminal: vc-live counts and explains dropouts
itself, and their lines would break the status line. Set VC_LIVE_DEBUG=1 to see them."""

from __future__ import annotations

import os
import sys
import threading

_native_log_handlers = []  # ctypes callbacks must outlive the libraries' use of them


def quiet_alsa_messages() -> None:
    """Route libasound's own error printing (\"ALSA lib pcm.c: underrun occurred\" for every xrun) to
    nowhere: vc-live counts underflows itself and explains them; the lines would break the status line.
    Set VC_LIVE_DEBUG=1 to keep them."""
    if os.environ.get("VC_LIVE_DEBUG") or _native_log_handlers or not sys.platform.startswith("linux"):
        return
    import ctypes
    import ctypes.util

    try:
        asound = ctypes.CDLL(ctypes.util.find_library("asound") or "libasound.so.2")
        # void handler(const char *file, int line, const char *function, int err, const char *fmt, ...)
        handler_type = ctypes.CFUNCTYPE(None, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_int,
                                        ctypes.c_char_p)
        handler = handler_type(lambda *args: None)
        asound.snd_lib_error_set_handler(handler)
        _native_log_handlers.append(handler)
    except (OSError, AttributeError):  # no ALSA on this system: nothing to quieten
        pass


class NativeStderrFilter:
    """While active, what C libraries print on file descriptor 2 passes through a pipe that drops
    PortAudio's and ALSA's internal diagnostics (\"Expression '...' failed in pa_linux_alsa.c\" when a
    device vanishes); Python's own sys.stderr writes straight to the terminal as before."""

    NOISE = ("Expression '", "ALSA lib ", "PaAlsa", "pa_linux_alsa.c", "Cannot connect to server socket",
             "jack server is not running")

    def __init__(self):
        self.active = False

    def __enter__(self):
        if os.environ.get("VC_LIVE_DEBUG"):
            return self
        try:
            sys.stderr.flush()
            self._saved_fd = os.dup(2)
            read_fd, write_fd = os.pipe()
            os.dup2(write_fd, 2)
            os.close(write_fd)
        except (OSError, ValueError, AttributeError):  # no real stderr (embedded use): leave it alone
            return self
        self._python_stderr = sys.stderr
        sys.stderr = open(os.dup(self._saved_fd), "w", buffering=1, encoding="utf-8", errors="replace",
                          closefd=True)
        self._thread = threading.Thread(target=self._pump, args=(read_fd,), name="vc-live-stderr", daemon=True)
        self._thread.start()
        self.active = True
        return self

    def _pump(self, read_fd: int) -> None:
        with open(read_fd, "rb", buffering=0) as pipe:
            pending = b""
            while True:
                chunk = pipe.read(4096)
                if not chunk:
                    break
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if not any(mark in line.decode("utf-8", "replace") for mark in self.NOISE):
                        os.write(self._saved_fd, line + b"\n")
            if pending:
                os.write(self._saved_fd, pending)

    def __exit__(self, *exc):
        if not self.active:
            return False
        self.active = False
        sys.stderr.flush()
        sys.stderr.close()
        sys.stderr = self._python_stderr
        os.dup2(self._saved_fd, 2)  # closes the pipe's last write end: the pump sees the end
        self._thread.join(timeout=2)
        os.close(self._saved_fd)
        return False
