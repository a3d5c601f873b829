"""Streaming engine cost and latency: what `vc-live` needs from the CPU.

    python tools/bench_engine.py [--json] [--model MODEL_DIR] [--target SPEAKER.npy] [--seconds 20] [--pulse]
                                 [--no-harmonics] [--strength S] [--fine-exemplars N]

rtf_default / rtf_lowlat: compute seconds per second of audio through `StreamingConverter.push` in
device-sized blocks (10 ms), one ONNX Runtime thread, 32 Griffin-Lim iterations, the default model, the
engine's default conversion (harmonics rebuilt at the target's pitch, z statistics, envelopes, the default
strength; target: the first examples/speakers/*.npy, with its register, statistics and envelopes, else zeros);
latency_*_ms: the engine's algorithmic latency (measured against an impulse in tests/test_engine.py),
pitch_latency_*_ms what the streaming pitch tracker adds to it (nothing with the default's cross-fade);
hop_peak_*: the slowest single hop against the hop's duration (what a live playback margin must cover);
rss_mb: peak resident memory of this process, which only loads the runtime (no PyTorch), the model and
both engines. Floors (issue 13, with harmonics): rtf_default <= 0.1, rtf_lowlat <= 0.3,
latency_default_ms <= 260, latency_lowlat_ms <= 110, rss_mb <= 250.

--pulse adds e2e_default_ms / e2e_lowlat_ms: the end-to-end delay of `vc-live` (microphone to speaker)
through a private user-mode PulseAudio with null sinks (tests/pulse.py), measured by cross-correlating
clicks on the server's own clock, in pass-through (the same path and delay as conversion).

Input: the bundled example clips (examples/audio) when present, else a synthetic voiced signal;
repeated to --seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
# One thread means one: numpy's BLAS must not fan out either (set before numpy is imported).
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

FLOORS = {"rtf_default": 0.1, "rtf_lowlat": 0.3, "latency_default_ms": 260.0, "latency_lowlat_ms": 110.0,
          "rss_mb": 250.0}
BLOCK = 160  # 10 ms at 16 kHz, like a device callback


def _input_audio(seconds: float, sr: int):
    import numpy as np

    from vc.audio import AUDIO_EXTENSIONS, read_audio

    clips = sorted(p for p in (REPO / "examples" / "audio").rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS)
    pieces, total, source = [], 0, "examples/audio"
    for clip in clips:
        audio, _ = read_audio(clip, sr=sr)
        pieces.append(audio)
        total += audio.size
    if not pieces:
        source = "synthetic voiced signal"
        t = np.arange(int(4 * sr)) / sr
        phase = 2 * np.pi * np.cumsum(130 * (1 + 0.15 * np.sin(2 * np.pi * 0.9 * t))) / sr
        voiced = sum(np.sin(k * phase) / k for k in range(1, 30))
        pieces = [(0.1 * voiced * (np.sin(2 * np.pi * 2.5 * t) > -0.4)).astype(np.float32)]
        total = pieces[0].size
    audio = np.concatenate(pieces * int(np.ceil(seconds * sr / total)))[: int(seconds * sr)]
    return audio.astype(np.float32), source


def _time_engine(engine, audio) -> tuple[float, float]:
    """(compute seconds per audio second, slowest hop's compute / hop duration)."""
    engine.reset()
    hop_s = engine.hop_ms / 1000.0
    worst = 0.0
    started = time.perf_counter()
    for i in range(0, audio.size, BLOCK):
        hops = engine.hops
        t0 = time.perf_counter()
        engine.push(audio[i:i + BLOCK])
        if engine.hops > hops:
            worst = max(worst, (time.perf_counter() - t0) / ((engine.hops - hops) * hop_s))
    spent = time.perf_counter() - started
    return spent / (audio.size / engine.sr), worst


def _end_to_end_ms(model_dir: str, f_dim: int, extra: list[str]) -> dict:
    """Median click delay through vc-live on a private PulseAudio server, and vc-live's own estimate."""
    import signal
    import subprocess
    import tempfile

    import numpy as np

    sys.path.insert(0, str(REPO / "tests"))
    import pulse

    with tempfile.TemporaryDirectory() as tmp, pulse.PulseServer() as server:
        target = Path(tmp) / "zeros.npy"
        np.save(target, np.zeros(f_dim, np.float32))
        rate = server.rate
        recorder = server.recorder()
        live = subprocess.Popen([sys.executable, "-m", "vc.cli.live", "--target", str(target), "--model",
                                 model_dir, "--passthrough", "--json", "--device", "cpu", *extra], cwd=REPO,
                                env=server.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        server.wait_for_client_streams()
        time.sleep(2.0)  # past vc-live's settling time
        clicks = np.zeros(int(5.2 * rate), np.float32)
        positions = [int((0.2 + k) * rate) for k in range(5)]
        clicks[positions] = 0.8
        server.play(clicks).wait(timeout=20)
        time.sleep(1.2)
        live.send_signal(signal.SIGINT)
        out, err = live.communicate(timeout=30)
        recording = recorder.stop()
    if live.returncode != 0:
        raise SystemExit(f"bench_engine: vc-live failed: {err.strip()[-500:]}")
    summary = json.loads(out)
    left, right = recording[:, 0].astype(np.float64), recording[:, 1].astype(np.float64)
    delays = []
    for c in np.nonzero(np.abs(left) > 0.4)[0]:
        window = right[c:c + int(0.9 * rate)]
        if window.size == int(0.9 * rate) and np.max(np.abs(window)) > 0.1:
            delays.append(1000.0 * int(np.argmax(np.abs(window))) / rate)
    return {"measured_ms": round(float(np.median(delays)), 1) if delays else None,
            "spread_ms": round(float(np.ptp(delays)), 1) if delays else None,
            "estimated_ms": summary["latency_ms"], "underflows": summary["underflows"]}


def _peak_rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--model", default=None, help="model directory (default: $VC_MODEL, else models/default)")
    parser.add_argument("--target", default=None,
                        help="speaker.npy (default: the first examples/speakers/*.npy, else zeros)")
    parser.add_argument("--no-harmonics", dest="harmonics", action="store_false",
                        help="the DSAE's envelope alone (no pitch tracker)")
    parser.add_argument("--strength", type=float, default=None, help="conversion strength (default: the engine's)")
    parser.add_argument("--fine-structure", choices=("target", "source", "pulse"), default=None,
                        help="what voiced frames carry (default: the engine's)")
    parser.add_argument("--fine-exemplars", type=int, default=None,
                        help="target voiced frames averaged per voiced frame (default: the engine's)")
    parser.add_argument("--seconds", type=float, default=20.0, help="audio per measurement (default 20)")
    parser.add_argument("--n-iter", type=int, default=32, help="Griffin-Lim iterations (default 32)")
    parser.add_argument("--pulse", action="store_true",
                        help="also measure vc-live's end-to-end delay through a private PulseAudio server")
    args = parser.parse_args(argv)

    import numpy as np

    from vc.cli.args import conversion_settings
    from vc.engine import MODES, StreamingConverter
    from vc.model import ModelError, load_model
    from vc.speakers import SpeakerError, load_speaker

    try:
        model = load_model(args.model, device="cpu", threads=1)
        examples = sorted((REPO / "examples" / "speakers").glob("*.npy"))
        target_path = args.target or (str(examples[0]) if examples else None)
        target = (load_speaker(target_path, model) if target_path
                  else np.zeros(model.f_dim, np.float32))
    except (ModelError, SpeakerError) as exc:
        print(f"bench_engine: {exc}", file=sys.stderr)
        return 1
    audio, source = _input_audio(args.seconds, model.feature_config.sr)
    settings = conversion_settings(args, "bench_engine")
    result = {"model": str(model.model_dir), "model_id": model.model_id, "input": source,
              "seconds": round(audio.size / model.feature_config.sr, 2), "n_iter": settings.n_iter, "threads": 1,
              "target": target_path or "zeros", "harmonics": settings.harmonics, "strength": settings.strength,
              "fine_structure": settings.fine_structure, "fine_exemplars": settings.fine_exemplars}
    for name in ("default", "lowlat"):
        engine = StreamingConverter(model, target, settings=settings, **MODES[name])
        _time_engine(engine, audio[: model.feature_config.sr])  # warm-up: ORT's first calls are slow
        rtf, peak = _time_engine(engine, audio)
        result[f"rtf_{name}"] = round(rtf, 4)
        result[f"hop_peak_{name}"] = round(peak, 4)
        result[f"latency_{name}_ms"] = round(engine.algorithmic_latency_ms, 2)
        result[f"hop_{name}_ms"] = engine.hop_ms
        result[f"lookahead_{name}_ms"] = engine.lookahead_ms
        result[f"pitch_latency_{name}_ms"] = round(engine.pitch_latency_ms, 2)
    result["rss_mb"] = round(_peak_rss_mb(), 1)
    result["torch_loaded"] = "torch" in sys.modules
    if args.pulse:
        for name, extra in (("default", []), ("lowlat", ["--low-latency"])):
            e2e = _end_to_end_ms(str(model.model_dir), model.f_dim, extra)
            result[f"e2e_{name}_ms"] = e2e["measured_ms"]
            result[f"e2e_{name}_detail"] = e2e
    result["floors"] = FLOORS
    result["within_floors"] = all(result[k] <= v for k, v in FLOORS.items())
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>20}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
