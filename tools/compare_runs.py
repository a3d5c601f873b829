"""Two evaluations of the same conversions, paired: how far a change moved each judge, with 95 % intervals.

Two runs of `tools/eval_conversion.py --details` on one protocol convert the same utterances to the same
targets, so their difference is measured far more finely than either figure alone: the clips that are hard
for Whisper or close to the target's voice are hard in both runs. A paired bootstrap over the conversions
(resampling whole conversions, the rates summed again in each) gives each difference an interval.

    python tools/compare_runs.py runs/default.csv runs/change.csv            # every path both hold
    python tools/compare_runs.py runs/default.csv runs/change.csv --path stream --json
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

KEY = ("path", "source", "target", "utterance")


class RunsDiffer(ValueError):
    """The two runs do not hold the same conversions."""


def read_details(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or any(k not in rows[0] for k in KEY + ("cos_target", "cos_source")):
        raise ValueError("not a details CSV of tools/eval_conversion.py (no conversions, or no similarity columns)")
    return rows


def paired(base: list[dict], other: list[dict], path: str) -> list[tuple[dict, dict]]:
    """The conversions of `path` in both runs, matched by source, target and utterance."""
    a = {tuple(r[k] for k in KEY): r for r in base if r["path"] == path}
    b = {tuple(r[k] for k in KEY): r for r in other if r["path"] == path}
    if not a and not b:
        raise RunsDiffer(f"neither run holds {path} conversions")
    if a.keys() != b.keys():
        raise RunsDiffer(f"the {path} conversions differ: {len(a.keys() - b.keys())} only in the first run, "
                         f"{len(b.keys() - a.keys())} only in the second (not the same protocol?)")
    return [(a[k], b[k]) for k in sorted(a)]


def _margin(row: dict) -> float:
    return float(row["cos_target"]) - float(row["cos_source"])


def _word_errors(pairs: list[tuple[dict, dict]]):
    """Both runs' converted transcripts against the texts, as `judges.WordErrors` holding the same utterances in
    the same order (the pairing `judges.gap_interval` needs); None without transcripts or texts."""
    from judges import WordErrors

    if "transcript_converted" not in pairs[0][0]:
        return None
    first, second = WordErrors(), WordErrors()
    for a, b in pairs:
        first.add(a["text"], a["transcript_converted"])
        second.add(b["text"], b["transcript_converted"])
    return (first, second) if first.utterances else None


def compare(pairs: list[tuple[dict, dict]], *, resamples: int = 2000, seed: int = 0) -> dict:
    """Each judge's figure in both runs, the second less the first, and that difference's interval."""
    from judges import gap_interval, percentile_interval

    rng = np.random.default_rng(seed)
    out: dict = {"conversions": len(pairs)}

    def per_conversion(name: str, a: np.ndarray, b: np.ndarray) -> None:
        draws = rng.integers(0, a.size, size=(resamples, a.size))
        interval = percentile_interval(b[draws].mean(axis=1) - a[draws].mean(axis=1))
        out[name] = {"first": round(float(a.mean()), 4), "second": round(float(b.mean()), 4),
                     "difference": round(float(b.mean() - a.mean()), 4),
                     "ci95": [round(v, 4) for v in interval]}

    margins = np.array([[_margin(a), _margin(b)] for a, b in pairs])
    per_conversion("target_closer_rate", (margins[:, 0] > 0).astype(float), (margins[:, 1] > 0).astype(float))
    per_conversion("mean_margin", margins[:, 0], margins[:, 1])
    errors = _word_errors(pairs)
    if errors is not None:
        first, second = errors
        for name, capped in (("wer_converted", False), ("wer_converted_capped", True)):
            a, b = (e.capped_rate() if capped else e.rate() for e in (first, second))
            interval = gap_interval(second, first, capped=capped, resamples=resamples, seed=seed)
            out[name] = {"first": round(a, 4), "second": round(b, 4), "difference": round(b - a, 4),
                         "ci95": [round(v, 4) for v in interval]}
        out["texted"] = first.utterances
    if "dnsmos_ovrl" in pairs[0][0] and all(a["dnsmos_ovrl"] and b["dnsmos_ovrl"] for a, b in pairs):
        mos = np.array([[float(a["dnsmos_ovrl"]), float(b["dnsmos_ovrl"])] for a, b in pairs])
        per_conversion("dnsmos_ovrl", mos[:, 0], mos[:, 1])
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("first", type=Path, help="details CSV of the run compared against (the default)")
    parser.add_argument("second", type=Path, help="details CSV of the changed run, same protocol")
    parser.add_argument("--path", choices=("file", "stream"), action="append",
                        help="which path (default: every path both runs hold)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    runs = []
    for path in (args.first, args.second):
        try:
            runs.append(read_details(path))
        except (OSError, ValueError, csv.Error) as e:
            print(f"error: {path}: {e}", file=sys.stderr)
            return 2
    paths = args.path or [p for p in ("file", "stream") if any(r["path"] == p for r in runs[0])
                          and any(r["path"] == p for r in runs[1])]
    if not paths:
        print(f"error: {args.first} and {args.second} share no path (file or stream)", file=sys.stderr)
        return 2
    report = {}
    for path in paths:
        try:
            report[path] = compare(paired(runs[0], runs[1], path))
        except RunsDiffer as e:
            print(f"error: {args.second}: {e}", file=sys.stderr)
            return 2
        except ValueError as e:   # a similarity or DNSMOS cell that is not a number
            print(f"error: {args.first} or {args.second}: a {path} row does not hold numbers where the "
                  f"judges' columns are ({e})", file=sys.stderr)
            return 2
    if args.json:
        print(json.dumps(report))
        return 0
    for path, figures in report.items():
        print(f"{path}: {figures['conversions']} conversions ({figures.get('texted', 0)} with a text)")
        for name, f in figures.items():
            if isinstance(f, dict):
                print(f"  {name:22s} {f['first']:8.4f} -> {f['second']:8.4f}  {f['difference']:+.4f} "
                      f"(95 %: {f['ci95'][0]:+.4f} to {f['ci95'][1]:+.4f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
