"""vc-live --target speaker.npy: speak into the microphone, hear the target voice."""

from __future__ import annotations

import argparse
import json
import sys
from vc.cli.args import (add_model_arguments, add_words_arguments, conversion_settings, gate_level,
                         interrupted_quietly, non_negative_float, non_negative_int, one_line_warnings,
                         positive_float, positive_int, share)


def _strength(text: str) -> float:
    from vc.settings import MAX_STRENGTH

    value = float(text)
    if not 0.0 <= value <= MAX_STRENGTH:
        raise argparse.ArgumentTypeError(f"must be a number from 0 to {MAX_STRENGTH:g}, not {text}")
    return value


def _latency(text: str):
    if text in ("low", "high"):
        return text
    return positive_float(text)


def build_parser() -> argparse.ArgumentParser:
    from vc.engine import DEFAULT_GATE_DB, MODES
    from vc.settings import DEFAULT_N_ITER, DEFAULT_STRENGTH

    default, lowlat = MODES["default"], MODES["lowlat"]
    parser = argparse.ArgumentParser(
        prog="vc-live",
        description="Live voice conversion: microphone in, the target speaker's voice out. Ctrl-C stops and "
                    "prints a summary.")
    parser.add_argument("--target", metavar="SPEAKER.npy", help="target speaker (made by vc-enroll)")
    parser.add_argument("--source", metavar="ME.npy", default=None,
                        help="you, enrolled with vc-enroll from your own recordings: your voice is known from "
                             "the first word instead of being learnt as you speak (for one speaker at the mic)")
    add_model_arguments(parser)
    parser.add_argument("--list-devices", action="store_true", help="list audio devices and exit")
    parser.add_argument("-i", "--input-device", metavar="DEV", default=None,
                        help="capture device: index or part of its name (default: the system's default)")
    parser.add_argument("-o", "--output-device", metavar="DEV", default=None,
                        help="playback device: index, part of its name, or 'none' to only --record")
    parser.add_argument("--samplerate", type=positive_int, default=None, metavar="HZ",
                        help="device sample rate (default: each device's own); audio is resampled to and "
                             "from the model's 16 kHz")
    parser.add_argument("--low-latency", action="store_true",
                        help=f"preset: {lowlat['hop_ms']:g} ms hop, {lowlat['lookahead_ms']:g} ms look-ahead "
                             "(about 98 ms instead of 258 ms; two and a half times as many model calls, no cross-fade)")
    parser.add_argument("--hop-ms", type=positive_float, default=None,
                        help=f"audio per model call, a multiple of 10 ms up to 200 (default {default['hop_ms']:g}); "
                             "the default preset cross-fades its 200 ms windows, so its latency stays 258 ms "
                             "whatever the hop; with --low-latency it is the hop + 58 ms")
    parser.add_argument("--lookahead-ms", type=non_negative_float, default=None,
                        help=f"Griffin-Lim look-ahead (default {default['lookahead_ms']:g})")
    parser.add_argument("--n-iter", type=non_negative_int, default=None,
                        help=f"Griffin-Lim iterations per hop (default {DEFAULT_N_ITER})")
    parser.add_argument("--gate-db", type=gate_level, default=DEFAULT_GATE_DB, metavar="DB",
                        help=f"noise gate: input below this level (dBFS) fades to silence; 'off' disables "
                             f"(default {DEFAULT_GATE_DB or 'off'}; e.g. -50)")
    parser.add_argument("--strength", type=_strength, default=None, metavar="S",
                        help=f"how far the voice moves: f = f_source + S (f_target - f_source), f_source averaged "
                             f"over your speech so far (default {DEFAULT_STRENGTH:g}; 1: the plain code swap)")
    parser.add_argument("--follow-level", type=share, default=None, metavar="A",
                        help="how far each converted frame's level moves to your voice's, 0 to 2 (default 0.5; "
                             "0: the decoder's own level, nearer the target)")
    add_words_arguments(parser)
    parser.add_argument("--no-harmonics", dest="harmonics", action="store_false",
                        help="output the model's envelope alone (breathy, no pitch; saves the pitch tracker's "
                             "12.6 ms of latency)")
    parser.add_argument("--passthrough", action="store_true",
                        help="play the input unconverted, with the same delay (for A/B comparison)")
    parser.add_argument("--record", metavar="OUT.wav", default=None, help="also write the output to a WAV file")
    parser.add_argument("--duration", type=positive_float, default=None, metavar="SECONDS",
                        help="stop after this many seconds")
    parser.add_argument("--input-file", metavar="IN.wav", default=None,
                        help="play this file into the converter in real time instead of the microphone")
    parser.add_argument("--latency", type=_latency, default="high", metavar="low|high|SECONDS",
                        help="device buffer size PortAudio should aim for: 'low' saves a few ms where the "
                             "audio system keeps up (default high: fewer dropouts)")
    parser.add_argument("--json", action="store_true", help="print the final summary as JSON")
    status = parser.add_mutually_exclusive_group()
    status.add_argument("--status", dest="status", action="store_true", default=None,
                        help="show the live status line (default: when stderr is a terminal)")
    status.add_argument("--no-status", dest="status", action="store_false")
    return parser


@interrupted_quietly("vc-live")   # Ctrl-C before the streams ran (e.g. while the model loads)
def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    one_line_warnings("vc-live")
    from vc.live import (DeviceSettings, EngineSettings, LiveError, LiveSettings, SessionSettings,
                         format_device_list, format_summary, import_sounddevice, run_live)

    try:
        if args.list_devices:
            print(format_device_list(import_sounddevice()))
            return 0
        if not args.target:
            parser.error("--target SPEAKER.npy is required (make one with vc-enroll)")
        settings = LiveSettings(
            engine=EngineSettings(target=args.target, model=args.model, device=args.device, threads=args.threads,
                                  low_latency=args.low_latency, hop_ms=args.hop_ms, lookahead_ms=args.lookahead_ms,
                                  gate_db=args.gate_db, passthrough=args.passthrough, source=args.source,
                                  conversion=conversion_settings(args, "vc-live")),
            devices=DeviceSettings(input_device=args.input_device, output_device=args.output_device,
                                   samplerate=args.samplerate, latency=args.latency),
            session=SessionSettings(input_file=args.input_file, record=args.record, duration=args.duration,
                                    status=args.status))
        summary = run_live(settings)
    except LiveError as exc:
        print(f"vc-live: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(summary) if args.json else format_summary(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
