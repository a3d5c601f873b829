"""tools/compare_runs.py: two evaluations of the same conversions, paired."""

from __future__ import annotations

import csv
import importlib.util
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tools"))
spec = importlib.util.spec_from_file_location("compare_runs", REPO / "tools" / "compare_runs.py")
compare_runs = importlib.util.module_from_spec(spec)
sys.modules["compare_runs"] = compare_runs
spec.loader.exec_module(compare_runs)

TEXT = "the cat sat on the mat"   # six words


def _rows(margins, transcripts, mos, path="file"):
    return [{"path": path, "source": f"s{i % 3}", "target": f"t{i % 2}", "utterance": f"u{i}",
             "cos_target": 0.5 + m, "cos_source": 0.5, "text": TEXT, "transcript_converted": t,
             "dnsmos_ovrl": q} for i, (m, t, q) in enumerate(zip(margins, transcripts, mos))]


def _write(path: Path, rows) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_a_change_is_measured_against_the_same_conversions():
    n = 40
    base = _rows([0.1] * n, ["the cat sat on a mat"] * n, [2.5] * n)            # 1 edit in 6 words each
    # the change keeps every word, loops on one clip (capped at its 6 words), loses one conversion's voice
    transcripts = [TEXT] * (n - 1) + ["mat " * 30]
    other = _rows([0.12] * (n - 1) + [-0.05], transcripts, [2.6] * n)
    result = compare_runs.compare(compare_runs.paired(base, other, "file"))
    assert result["conversions"] == n and result["texted"] == n
    assert result["target_closer_rate"]["difference"] == -0.025
    capped = result["wer_converted_capped"]
    assert capped["first"] == round(1 / 6, 4) and capped["second"] == round(6 / (6 * n), 4)
    assert capped["ci95"][0] <= capped["difference"] <= capped["ci95"][1] < 0
    uncapped = result["wer_converted"]
    assert uncapped["second"] > capped["second"]          # the loop counts in full without the cap
    assert uncapped["ci95"][1] - uncapped["ci95"][0] > capped["ci95"][1] - capped["ci95"][0]
    assert result["dnsmos_ovrl"]["difference"] == 0.1 and result["dnsmos_ovrl"]["ci95"] == [0.1, 0.1]


def test_runs_of_other_conversions_are_refused(tmp_path, capsys):
    base = _write(tmp_path / "a.csv", _rows([0.1] * 4, [TEXT] * 4, [2.5] * 4))
    other_rows = _rows([0.1] * 4, [TEXT] * 4, [2.5] * 4)
    other_rows[0]["utterance"] = "elsewhere"
    other = _write(tmp_path / "b.csv", other_rows)
    assert compare_runs.main([str(base), str(other)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "b.csv" in err and "1 only in the first run" in err
    (tmp_path / "c.csv").write_text("just,some\ncolumns,here\n")
    assert compare_runs.main([str(base), str(tmp_path / "c.csv")]) == 2
    assert "c.csv" in capsys.readouterr().err
    garbled_rows = _rows([0.1] * 4, [TEXT] * 4, [2.5] * 4)
    garbled_rows[2]["cos_target"] = "n/a"
    garbled = _write(tmp_path / "d.csv", garbled_rows)
    assert compare_runs.main([str(base), str(garbled)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "d.csv" in err
    assert compare_runs.main([str(base), str(base), "--path", "stream"]) == 2
    assert "stream" in capsys.readouterr().err


def test_the_report_names_each_path(tmp_path, capsys):
    rows = _rows([0.1] * 6, [TEXT] * 6, [2.5] * 6) + _rows([0.1] * 6, [TEXT] * 6, [2.5] * 6, path="stream")
    a, b = _write(tmp_path / "a.csv", rows), _write(tmp_path / "b.csv", rows)
    assert compare_runs.main([str(a), str(b), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report) == {"file", "stream"}
    assert report["stream"]["wer_converted_capped"]["difference"] == 0.0
