"""Argument types shared by every command line (argparse turns their errors into one-line usage errors)."""
from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import sys


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, not {value}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a positive number, not {text}")
    return value


def non_negative_float(text: str) -> float:
    value = float(text)
    if not (value >= 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a number >= 0, not {text}")
    return value


def gate_level(text: str) -> float | None:
    """A noise gate's level in dBFS (<= 0), or 'off' (None)."""
    if text.strip().lower() in ("off", "none", "-inf"):
        return None
    value = float(text)
    if not math.isfinite(value) or value > 0:
        raise argparse.ArgumentTypeError(f"must be a level in dBFS <= 0 (e.g. -50) or 'off', not {text}")
    return value


def share(text: str) -> float:
    """A share of a move, 0 to 2 (beyond 1: past it)."""
    value = float(text)
    if not (0.0 <= value <= 2.0):
        raise argparse.ArgumentTypeError(f"must be from 0 to 2, not {text}")
    return value


def fraction(text: str) -> float:
    """A share of a whole, 0 to 1."""
    value = float(text)
    if not (0.0 <= value <= 1.0):
        raise argparse.ArgumentTypeError(f"must be from 0 to 1, not {text}")
    return value


def interrupted_quietly(prog: str, message: str = "interrupted"):
    """Decorates a command's main(): Ctrl-C at any moment, also while numpy, ONNX Runtime and the model load,
    ends with `prog: message` and status 130 instead of a traceback through the imports."""
    def decorate(main):
        @functools.wraps(main)
        def run(argv=None) -> int:
            try:
                return main(argv)
            except KeyboardInterrupt:
                pass
            except ImportError as exc:   # a compiled module interrupted while it initialises says so
                if not isinstance(exc.__cause__, KeyboardInterrupt):
                    raise
            print(f"{prog}: {message}", file=sys.stderr)
            return 130
        return run
    return decorate


def one_line_warnings(prog: str) -> None:
    """Show Python warnings (a truncated input file) as `prog: warning: message`, one line each, instead of
    Python's two-line form with a source line."""
    import warnings

    def show(message, category, filename, lineno, file=None, line=None):
        print(f"{prog}: warning: {message}", file=file or sys.stderr, flush=True)

    warnings.showwarning = show


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """--model, --device and --threads: which model runs where, the same in every command."""
    parser.add_argument("--model", metavar="MODEL_DIR", default=None,
                        help="model directory (default: $VC_MODEL, else models/default)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="where the model runs (default auto: CUDA when usable, else the CPU)")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="ONNX Runtime intra-op threads (default: the cores available, at most 4; "
                             "vc-batch: divided among the jobs)")


def add_words_arguments(parser: argparse.ArgumentParser) -> None:
    """--fine-structure, --source-detail, --formant-emphasis, --exemplar-match, --z-share,
    --envelope-prediction and --pauses: what the voiced frames carry, how sharp the envelopes are, how far z's
    statistics move, what each frame's envelope is drawn onto and what the pauses hold; the same in vc-batch
    and vc-live."""
    from vc.settings import DEFAULTS, EXEMPLAR_MATCHES, FINE_STRUCTURES, PAUSES

    parser.add_argument("--fine-structure", choices=FINE_STRUCTURES, default=None,
                        help=f"what voiced frames carry at the target's pitch: 'target', the target's own voiced "
                             f"frames; 'source', the source's own excitation analysed again at that pitch (more "
                             f"words, less of the target); 'pulse', a pulse train (default "
                             f"{DEFAULTS.fine_structure!r})")
    parser.add_argument("--source-detail", type=share, default=None, metavar="D",
                        help=f"share of the source's envelope that the model misses added back, 0 to 2 (more "
                             f"words, less of the target; default {DEFAULTS.source_detail:g})")
    parser.add_argument("--formant-emphasis", type=share, default=None, metavar="A",
                        help=f"how far each speech frame's envelope is sharpened about its tilt, 0 to 2 (the "
                             f"decoder and the averaged exemplars flatten formants; default "
                             f"{DEFAULTS.formant_emphasis:g})")
    parser.add_argument("--exemplar-match", choices=EXEMPLAR_MATCHES, default=None,
                        help=f"which of the target's own envelopes each frame is drawn onto: the nearest in 'z', "
                             f"by what is said, or in 'envelope', by how it looks (a speaker file without z); "
                             f"'phones' and 'envelope+phones' need a model with phones.onnx "
                             f"(default {DEFAULTS.exemplar_match!r})")
    parser.add_argument("--z-share", type=share, default=None, metavar="Z",
                        help=f"share of the move of z's statistics towards the target's, 0 to 2 (less keeps more "
                             f"of the words and less of the target; default {DEFAULTS.z_share:g})")
    parser.add_argument("--envelope-prediction", type=fraction, default=None, metavar="P",
                        help=f"share of each frame's envelope move that goes to the target's envelope predicted "
                             f"from the decoded one rather than to its nearest exemplars, 0 to 1 (default "
                             f"{DEFAULTS.envelope_prediction:g})")
    parser.add_argument("--pauses", choices=PAUSES, default=None,
                        help=f"what the frames without speech hold: 'converted', the model's output like the "
                             f"speech, or 'source', the input's own (its room) (default {DEFAULTS.pauses!r})")


def conversion_choices(args: argparse.Namespace) -> dict:
    """The `vc.settings.ConversionSettings` fields a command line set, by name: every option named after a
    field (--strength, --n-iter, --no-harmonics, the words arguments, ...) and not left unset (None). One map
    from options to settings, so a new knob needs its option and nothing else in vc-batch, vc-live or the
    evaluation tools."""
    from vc.settings import ConversionSettings

    fields = {field.name for field in dataclasses.fields(ConversionSettings)}
    return {name: value for name, value in vars(args).items() if name in fields and value is not None}


def conversion_settings(args: argparse.Namespace, prog: str, **more):
    """The `ConversionSettings` the options name (`conversion_choices`), with `more` on top; a value the
    settings refuse ends the command with one line, `prog: why` (status 1)."""
    from vc.settings import ConversionSettings

    try:
        return ConversionSettings.of(**{**conversion_choices(args), **more})
    except ValueError as exc:
        raise SystemExit(f"{prog}: {exc}") from None
