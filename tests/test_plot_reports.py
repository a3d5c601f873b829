"""tools/plot_reports.py: evaluation reports placed on the words-voice plane."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("plot_reports", REPO / "tools" / "plot_reports.py")
plot_reports = importlib.util.module_from_spec(spec)
sys.modules["plot_reports"] = plot_reports
spec.loader.exec_module(plot_reports)


def _part(converted, source, closer, interval=None):
    part = {"wer_converted_capped": converted, "wer_source_capped": source, "target_closer_rate": closer}
    if interval is not None:
        part["wer_converted_capped_gap_ci95"] = interval
    return part


def test_each_path_of_a_report_is_a_point_at_its_capped_gap():
    report = {"file": _part(0.44, 0.25, 0.92, [0.15, 0.22]), "stream": _part(0.43, 0.25, 0.90), "speakers": 24}
    points = plot_reports.report_points(report, "default")
    assert [p.path for p in points] == ["file", "stream"]
    assert abs(points[0].gap - 0.19) < 1e-9 and points[0].closer == 0.92
    assert points[0].interval == (0.15, 0.22) and points[1].interval is None
    flat = plot_reports.report_points(_part(0.40, 0.30, 0.95), "one path")
    assert len(flat) == 1 and flat[0].path == "" and abs(flat[0].gap - 0.10) < 1e-9
    assert plot_reports.report_points({**_part(0.40, 0.30, 0.95), "path": "stream"}, "x")[0].path == "stream"


def test_a_report_without_word_error_gives_no_point():
    assert plot_reports.report_points({"file": {"target_closer_rate": 0.9, "wer_converted_capped": None,
                                                 "wer_source_capped": None}}, "x") == []


def test_the_plot_is_written_and_bad_reports_are_refused(tmp_path, capsys):
    good = tmp_path / "a.json"
    good.write_text(json.dumps({"file": _part(0.44, 0.25, 0.92, [0.15, 0.22])}))
    out = tmp_path / "plane.png"
    assert plot_reports.main([str(good), "--label", "default", "-o", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "default" in capsys.readouterr().out
    broken = tmp_path / "b.json"
    broken.write_text("{not json")
    assert plot_reports.main([str(broken), "-o", str(tmp_path / "x.png")]) == 2
    assert "b.json" in capsys.readouterr().err
    empty = tmp_path / "c.json"
    empty.write_text(json.dumps({"file": {"target_closer_rate": 0.9}}))
    assert plot_reports.main([str(empty), "-o", str(tmp_path / "y.png")]) == 2
    assert not (tmp_path / "y.png").exists()
    assert "c.json" in capsys.readouterr().err
    garbled = tmp_path / "d.json"
    garbled.write_text(json.dumps({"file": _part("0.44", 0.25, 0.92)}))
    assert plot_reports.main([str(garbled), "-o", str(tmp_path / "z.png")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "d.json" in err and not (tmp_path / "z.png").exists()
    assert plot_reports.main([str(good), "-o", str(tmp_path / "no-such-folder" / "p.png")]) == 2
    assert "no-such-folder" in capsys.readouterr().err
