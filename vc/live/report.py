"""What vc-live tells its user: the status line while it runs, the summary at the end, and which
settings to lower on a machine that is too slow."""

from __future__ import annotations

import math
import shutil

from vc.live.settings import TOO_SLOW_FRACTION, EngineSettings


def pitch_status(engine) -> str:
    """'F0 182 Hz, source ~175 Hz +-2.1 st': the newest frame's F0 and the speaker's running register
    (median, spread in semitones); dashes while unvoiced or not yet known."""
    if not getattr(engine, "harmonics", False):
        return "F0 off"
    f0 = f"{engine.current_f0:3.0f} Hz" if engine.current_f0 > 0 else "  - Hz"
    register = engine.source_register
    if register is None:
        return f"F0 {f0}, source   - Hz"
    return (f"F0 {f0}, source ~{math.exp(register.log_mean):3.0f} Hz "
            f"+-{12.0 * register.log_std / math.log(2.0):.1f} st")


def pitch_summary(engine) -> dict:
    register = getattr(engine, "source_register", None)
    return {"harmonics": getattr(engine, "harmonics", False), "strength": getattr(engine, "strength", None),
            "source_f0_hz": round(math.exp(register.log_mean), 1) if register is not None else None}


def slow_advice(settings: EngineSettings, engine) -> str:
    tips = [f"lower --n-iter (now {engine.n_iter})"]
    if engine.hop_ms < 200:
        tips.append(f"raise --hop-ms (now {engine.hop_ms:g}; the default 200 costs least per second)")
    if settings.device != "cuda":
        tips.append("run the model with --device cuda if there is a GPU")
    return "; ".join(tips)


def latency_estimate_ms(session) -> float:
    """The engine's algorithmic latency + resamplers + one capture block + playout margin + what PortAudio
    reports for each stream."""
    total = (session.engine.algorithmic_latency_ms + session.resampler_ms
             + 1000.0 * session.block_in / session.in_rate)
    if session.playout is not None:
        total += 1000.0 * session.playout.margin_s
    for stream in session.streams:
        lat = stream.latency
        total += 1000.0 * (lat if isinstance(lat, float) else sum(lat))
    return total


def status_line(session) -> str:
    s = session.stats
    level = "  -inf" if not math.isfinite(s.level_db) or s.level_db < -99 else f"{s.level_db:6.1f}"
    mode = " [pass-through]" if session.engine.passthrough else ""
    line = (f"in {level} dBFS | {pitch_status(session.engine)} | "
            f"compute {s.recent_fraction():4.2f}x (peak {s.max_fraction:4.2f}x) | "
            f"latency ~{latency_estimate_ms(session):.0f} ms | overflows {s.overflows} | "
            f"underflows {s.underflows}{mode}")
    # One terminal line, or \r cannot redraw it; trailing blanks wipe a longer previous line.
    # Not a terminal (a pipe, a log): nothing to redraw, so room for the whole line.
    width = shutil.get_terminal_size((160, 24)).columns - 1
    return line[:width].ljust(width)


def summarise(session, wall_s: float, interrupted: bool) -> dict:
    s, engine = session.stats, session.engine
    mean_fraction = s.compute_s / s.audio_s if s.audio_s > 0 else 0.0
    summary = {
        "seconds": round(wall_s, 2),
        "audio_seconds": round(s.audio_s, 2),
        "compute_fraction": round(mean_fraction, 4),
        "hop_peak_fraction": round(s.max_fraction, 4),
        "latency_ms": round(latency_estimate_ms(session), 1),
        "algorithmic_latency_ms": round(engine.algorithmic_latency_ms, 1),
        **pitch_summary(engine),
        "overflows": s.overflows,
        "underflows": s.underflows,
        "device_underflows": s.device_underflows,
        "startup_underflows": s.startup_underflows,
        "margin_ms": round(1000.0 * session.playout.margin_s, 1) if session.playout is not None else 0.0,
        "drift_trims": s.trims,
        "interrupted": interrupted,
        "record": session.settings.session.record,
    }
    advice = None
    if mean_fraction > TOO_SLOW_FRACTION or (s.underflows > 3 and s.max_fraction > 1.0):
        advice = (f"This machine is too slow for these settings (conversion took {mean_fraction:.2f}x real "
                  f"time); {slow_advice(session.settings.engine, engine)}.")
    elif s.underflows > 3:
        advice = ("Playback ran dry although conversion kept up: the system's audio scheduling is irregular; "
                  "try --latency high.")
    summary["advice"] = advice
    return summary


def format_summary(summary: dict) -> str:
    text = (f"summary: {summary['audio_seconds']:.1f} s converted in {summary['seconds']:.1f} s; compute "
            f"{summary['compute_fraction']:.3f}x real time (hop peak {summary['hop_peak_fraction']:.2f}x); "
            f"latency ~{summary['latency_ms']:.0f} ms (algorithmic {summary['algorithmic_latency_ms']:.1f} ms); "
            f"overflows {summary['overflows']}; underflows {summary['underflows']}")
    if summary.get("record"):
        text += f"; recorded to {summary['record']}"
    if summary.get("advice"):
        text += "\n" + summary["advice"]
    return text


def install_ab_switch(toggle, stop, log, start_thread) -> None:
    """Enter on the terminal, or SIGUSR1 from a script, calls `toggle` (conversion <-> pass-through)."""
    try:
        import signal
        signal.signal(signal.SIGUSR1, toggle)
    except (ValueError, AttributeError, OSError):  # not the main thread, or no SIGUSR1 (Windows)
        pass
    try:
        import sys
        interactive = sys.stdin is not None and sys.stdin.isatty()
    except (ValueError, OSError):
        interactive = False
    if interactive:
        log("press Enter to switch between the converted voice and pass-through (A/B), Ctrl-C to stop")

        def read_keys():
            for _ in iter(sys.stdin.readline, ""):
                if stop.is_set():
                    return
                toggle()

        start_thread(read_keys, "vc-live-keys")
