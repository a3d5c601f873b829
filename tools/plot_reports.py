"""Evaluation reports on the words-voice plane: each `tools/eval_conversion.py --json` report as one point
per path (file, stream), the conversions' capped word error over their sources' (x; with its 95 % interval
where the report has one) against the rate at which they are judged nearer the target than the source (y),
with the floors drawn in. A setting that keeps more words at the same voice lies to the left; the floors
ask for a point above and to the left of both lines.

    python tools/plot_reports.py runs/a.json runs/b.json --label default --label words-first -o plane.png
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

PATHS = ("file", "stream")


@dataclass(frozen=True)
class Point:
    label: str
    path: str                          # "file", "stream", or "" where the report does not say
    gap: float                         # capped word error of the conversions less the sources'
    closer: float                      # target_closer_rate
    interval: tuple[float, float] | None


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def report_points(report: dict, label: str) -> list[Point]:
    """One report (the parsed JSON) -> its points: one per path it holds; none for a path without word error
    (run with --no-wer) or without texted utterances."""
    parts = [(p, report[p]) for p in PATHS if isinstance(report.get(p), dict)]
    if not parts:   # a report of one path (--path file or stream) says which in its "path"
        parts = [(report.get("path") if report.get("path") in PATHS else "", report)]
    points = []
    for path, part in parts:
        converted, source = part.get("wer_converted_capped"), part.get("wer_source_capped")
        closer = part.get("target_closer_rate")
        if converted is None or source is None or closer is None:
            continue
        interval = part.get("wer_converted_capped_gap_ci95")
        if interval is not None and not (isinstance(interval, list) and len(interval) == 2):
            raise ValueError(f"{path or 'its'} wer_converted_capped_gap_ci95 is not a pair of numbers")
        if not all(_is_number(v) for v in [converted, source, closer, *(interval or [])]):
            raise ValueError(f"{path or 'its'} word error, target-closer rate or interval is not a number")
        points.append(Point(label, path, converted - source, closer,
                            tuple(interval) if interval is not None else None))
    return points


def plot(points: list[Point], out: Path, *, gap_floor: float, closer_floors: list[float], title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9.5, 5.0))
    labels = list(dict.fromkeys(p.label for p in points))
    colours = {label: plt.cm.tab10(i % 10) for i, label in enumerate(labels)}
    for p in points:
        xerr = None if p.interval is None else [[p.gap - p.interval[0]], [p.interval[1] - p.gap]]
        ax.errorbar(p.gap, p.closer, xerr=xerr, fmt="o" if p.path != "stream" else "s", color=colours[p.label],
                    capsize=3, markersize=6)
    for label in labels:
        ax.plot([], [], "o", color=colours[label], label=label)
    if any(p.path == "stream" for p in points):
        ax.plot([], [], "o", markerfacecolor="none", markeredgecolor="black", label="file path")
        ax.plot([], [], "s", markerfacecolor="none", markeredgecolor="black", label="stream")
    ax.axvline(gap_floor, color="black", linestyle="--", linewidth=1)
    for floor in closer_floors:
        ax.axhline(floor, color="black", linestyle=":", linewidth=1)
    ax.set_xlabel("capped word error of the conversions less the sources' (lower keeps more words)")
    ax.set_ylabel("target-closer rate")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("reports", nargs="+", type=Path, help="JSON reports of tools/eval_conversion.py --json")
    parser.add_argument("--label", action="append", default=[],
                        help="a name per report, in order (default: the file's name)")
    parser.add_argument("-o", "--out", type=Path, required=True, help="the PNG to write")
    parser.add_argument("--gap-floor", type=float, default=0.15, help="issue 20's word-error gap (default 0.15)")
    parser.add_argument("--closer-floor", type=float, action="append",
                        help="target-closer floors to draw (default 0.9 and 0.85)")
    parser.add_argument("--title", default="conversions: words against voice")
    args = parser.parse_args(argv)
    if len(args.label) > len(args.reports):
        parser.error(f"{len(args.label)} labels for {len(args.reports)} reports")
    points = []
    for i, path in enumerate(args.reports):
        try:
            report = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            print(f"error: {path}: not a readable JSON report ({e.__class__.__name__})", file=sys.stderr)
            return 2
        if not isinstance(report, dict):
            print(f"error: {path}: not an evaluation report (a JSON object)", file=sys.stderr)
            return 2
        label = args.label[i] if i < len(args.label) else path.stem
        try:
            found = report_points(report, label)
        except ValueError as e:
            print(f"error: {path}: {e}", file=sys.stderr)
            return 2
        if not found:
            print(f"error: {path}: no word error and target-closer rate in it (run with the word judge)",
                  file=sys.stderr)
            return 2
        points.extend(found)
    try:
        plot(points, args.out, gap_floor=args.gap_floor, closer_floors=args.closer_floor or [0.9, 0.85],
             title=args.title)
    except OSError as e:
        print(f"error: {args.out}: cannot write the figure ({e.strerror or e})", file=sys.stderr)
        return 2
    for p in points:
        print(f"{p.label:24s} {p.path or '-':6s} gap {p.gap:+.3f} closer {p.closer:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
