"""vc-batch: relative paths, formats and rates, safety rules (refused folders, bad files among good ones,
atomic outputs, interrupt and resume, skip/overwrite), processes, exit codes."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from helpers import interruptible, speech, tiny_model_dir


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("batch")
    model_dir, _ = tiny_model_dir(root / "model", f_dim=4, seed=7)
    from vc.speakers import save_speaker

    target = root / "target.npy"
    save_speaker(target, np.array([0.5, -0.5, 1.0, 0.0], np.float32))
    return model_dir, target


def make_tree(base):
    (base / "a" / "b").mkdir(parents=True)
    sf.write(base / "one.wav", speech(0.6, seed=1), 16000)
    y = speech(0.5, seed=2)
    import soxr

    hi = soxr.resample(y, 16000, 44100)
    sf.write(base / "a" / "two.flac", np.stack([hi, hi * 0.5], axis=1), 44100)
    sf.write(base / "a" / "b" / "three.ogg", soxr.resample(y, 16000, 22050), 22050, format="OGG", subtype="VORBIS")
    (base / "a" / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    (base / "readme.txt").write_text("not audio, ignored")
    return base


def digest(folder):
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def run_cli(args, setup, extra=()):
    from vc.cli.batch import main

    model_dir, target = setup
    return main([*map(str, args), "--target", str(target), "--model", str(model_dir), "--device", "cpu",
                 "--n-iter", "2", "--quiet", *extra])


def test_tree_formats_bad_file_and_exit_code(tmp_path, setup, capsys):
    src = make_tree(tmp_path / "in")
    before = digest(src)
    out = tmp_path / "out"
    assert run_cli([src, out], setup) == 1  # broken.wav failed, the rest went on
    captured = capsys.readouterr()
    assert "4 file(s): 3 converted, 0 skipped (output exists), 1 failed" in captured.out
    assert "real-time factor" in captured.out
    assert "a/broken.wav: cannot read audio" in captured.err and "Traceback" not in captured.err
    assert digest(src) == before  # inputs untouched
    produced = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}
    assert produced == {"one.wav", "a/two.wav", "a/b/three.wav"}
    for rel, sr in (("one.wav", 16000), ("a/two.wav", 44100), ("a/b/three.wav", 22050)):
        info = sf.info(str(out / rel))
        assert info.samplerate == sr and info.channels == 1 and info.format == "WAV"
    # --sr forces one output rate.
    os.remove(src / "a" / "broken.wav")
    assert run_cli([src, tmp_path / "out16"], setup, ["--sr", "16000"]) == 0
    assert {sf.info(str(p)).samplerate for p in (tmp_path / "out16").rglob("*.wav")} == {16000}


def test_refused_folders(tmp_path, setup, capsys):
    src = make_tree(tmp_path / "in")
    before = digest(src)
    for out in (src, src / "converted", src / "a" / "..", tmp_path / "in" / "a" / "deeper"):
        assert run_cli([src, out], setup) == 1
        err = capsys.readouterr().err
        assert err.startswith("vc-batch: error: ") and ("is the input folder" in err or "inside the input" in err)
    assert run_cli([tmp_path / "missing", tmp_path / "o"], setup) == 1
    assert "input folder not found" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert run_cli([tmp_path / "empty", tmp_path / "o"], setup) == 1
    assert "no audio files" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:  # argparse: usage error
        run_cli([src, tmp_path / "o"], setup, ["--jobs", "0"])
    assert exit_info.value.code == 2
    with pytest.raises(SystemExit) as exit_info:
        run_cli([src, tmp_path / "o"], setup, ["--envelope-prediction", "1.5"])
    assert exit_info.value.code == 2 and "must be from 0 to 1, not 1.5" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        run_cli([src, tmp_path / "o"], setup, ["--z-share", "-1"])
    assert exit_info.value.code == 2 and "must be from 0 to 2, not -1" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        run_cli([src, tmp_path / "o"], setup, ["--pauses", "silence"])
    assert exit_info.value.code == 2 and "invalid choice: 'silence'" in capsys.readouterr().err
    assert digest(src) == before

    # IN_DIR inside OUT_DIR is allowed, but no output may land inside IN_DIR: with IN_DIR = outer/in and
    # OUT_DIR = outer, the input outer/in/in/one.wav would be converted to outer/in/one.wav.
    nested = tmp_path / "outer"
    make_tree(nested / "in" / "in")
    os.remove(nested / "in" / "in" / "a" / "broken.wav")
    sf.write(nested / "in" / "top.wav", speech(0.3), 16000)
    inner_before = digest(nested / "in")
    assert run_cli([nested / "in", nested], setup) == 1
    captured = capsys.readouterr()
    assert "would be inside the input folder" in captured.err
    assert digest(nested / "in") == inner_before
    assert (nested / "top.wav").is_file()


def test_mismatched_target_refused_before_any_work(tmp_path, setup, capsys):
    from vc.cli.batch import main

    src = make_tree(tmp_path / "in")
    np.save(tmp_path / "big.npy", np.zeros(7, np.float32))
    code = main([str(src), str(tmp_path / "out"), "--target", str(tmp_path / "big.npy"), "--model",
                 str(setup[0]), "--device", "cpu", "--quiet"])
    assert code == 1
    assert "size 7 does not match the model's f_dim 4" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_target_without_envelope_z_refused_in_one_line_or_matched_by_envelope(tmp_path, setup, capsys):
    """Envelopes matched by z (the default) need the z of each envelope: a speaker file without it stops the
    batch before any work, naming the file, and --exemplar-match envelope converts with it."""
    from vc.cli.batch import main
    from vc.speakers import Speaker, save_speaker

    src = make_tree(tmp_path / "in")
    os.remove(src / "a" / "broken.wav")
    rng = np.random.default_rng(0)
    old = tmp_path / "old.npy"
    save_speaker(old, Speaker(np.array([0.5, -0.5, 1.0, 0.0], np.float32),
                              envelopes=(rng.standard_normal((40, 48)) * 3).astype(np.float16)))
    args = [str(src), str(tmp_path / "out"), "--target", str(old), "--model", str(setup[0]), "--device", "cpu",
            "--n-iter", "2", "--quiet"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{old}: its envelopes have no z (envelope_z)" in err
    assert "--exemplar-match envelope" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()
    assert main(args + ["--exemplar-match", "envelope"]) == 0
    assert len(list((tmp_path / "out").rglob("*.wav"))) == 3


def test_skip_existing_overwrite_and_resume_after_interrupt(tmp_path, setup, monkeypatch):
    import vc.files
    from vc.batch import batch_convert

    model_dir, target = setup
    src = make_tree(tmp_path / "in")
    os.remove(src / "a" / "broken.wav")
    out = tmp_path / "out"
    kwargs = dict(model_dir=model_dir, n_iter=2, device="cpu", progress=False)

    # Interrupt (Ctrl-C) while the second output is being renamed into place.
    real_replace = os.replace
    calls = []

    def replace_then_interrupt(a, b):
        calls.append(b)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_replace(a, b)

    monkeypatch.setattr(vc.files.os, "replace", replace_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        batch_convert(src, out, target, **kwargs)
    monkeypatch.setattr(vc.files.os, "replace", real_replace)
    left = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert left == ["one.wav"]  # the finished file; no partial or temporary second file
    first = out / "one.wav"
    stamp = first.stat().st_mtime_ns

    summary = batch_convert(src, out, target, **kwargs)  # resume
    assert (summary.converted, summary.skipped, summary.failed) == (2, 1, [])
    assert first.stat().st_mtime_ns == stamp
    assert {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()} == {"one.wav", "a/two.wav", "a/b/three.wav"}

    summary = batch_convert(src, out, target, **kwargs)
    assert (summary.converted, summary.skipped) == (0, 3)
    summary = batch_convert(src, out, target, overwrite=True, **kwargs)
    assert (summary.converted, summary.skipped) == (3, 0)
    assert first.stat().st_mtime_ns != stamp


def test_jobs_use_processes_and_agree(tmp_path, setup):
    from vc.batch import batch_convert

    model_dir, target = setup
    src = make_tree(tmp_path / "in")
    os.remove(src / "a" / "broken.wav")
    sf.write(src / "four.wav", speech(0.4, seed=4), 16000)
    sf.write(src / "clash.flac", speech(0.3, seed=6), 16000)  # would become clash.wav, as would:
    sf.write(src / "clash.wav", speech(0.3, seed=5), 16000)
    one = batch_convert(src, tmp_path / "o1", target, model_dir=model_dir, n_iter=2, device="cpu", progress=False)
    two = batch_convert(src, tmp_path / "o2", target, model_dir=model_dir, n_iter=2, device="cpu", progress=False,
                        jobs=2)
    assert one.converted == two.converted == 5
    assert [rel for rel, _ in one.failed] == [rel for rel, _ in two.failed] == ["clash.wav"]
    assert "also be written from clash.flac" in one.failed[0][1]
    for p in (tmp_path / "o1").rglob("*.wav"):
        a, _ = sf.read(p)
        b, _ = sf.read(tmp_path / "o2" / p.relative_to(tmp_path / "o1"))
        np.testing.assert_allclose(a, b, atol=2e-3)
    assert two.audio_seconds == pytest.approx(one.audio_seconds)
    assert one.worker_pids == {os.getpid()}  # --jobs 1 converts in this process
    # --jobs 2 converts in worker processes (at most two; a fast one may take every file)
    assert 1 <= len(two.worker_pids) <= 2 and os.getpid() not in two.worker_pids


def _batch_with_a_worker_killed(tmp_path, setup, monkeypatch, *, after_writing: bool):
    """Twelve files on two workers; the worker that takes 05.wav is SIGKILLed (by itself, so the moment is
    certain) before it writes the file or after it wrote it but before it reported it."""
    import multiprocessing
    import signal

    import vc.batch
    from vc.batch import batch_convert

    model_dir, target = setup
    src = tmp_path / "in"
    src.mkdir()
    for i in range(12):
        sf.write(src / f"{i:02d}.wav", speech(1.0, seed=i), 16000)
    real_convert_file = vc.batch.convert_file

    def convert_or_die(src_path, dst, *args, **kwargs):
        seconds = real_convert_file(src_path, dst, *args, **kwargs) if after_writing else 0.0
        if Path(src_path).name == "05.wav":
            os.kill(os.getpid(), signal.SIGKILL)
        return seconds if after_writing else real_convert_file(src_path, dst, *args, **kwargs)

    monkeypatch.setattr(vc.batch, "convert_file", convert_or_die)   # the forked workers inherit it
    out = tmp_path / "out"
    summary = batch_convert(src, out, target, model_dir=model_dir, n_iter=30, device="cpu", progress=False,
                            jobs=2)
    assert multiprocessing.active_children() == []
    assert not list(out.glob(".*.part"))
    return summary, sorted(p.name for p in out.glob("*.wav"))


@pytest.mark.skipif("fork" not in __import__("multiprocessing").get_all_start_methods(),
                    reason="the killing stand-in reaches the workers only through fork")
def test_a_worker_killed_mid_batch_fails_only_its_file(tmp_path, setup, monkeypatch):
    """A worker that dies (out of memory, killed) costs the file it held; the other worker converts the rest
    and the batch ends instead of waiting forever for the lost result."""
    summary, written = _batch_with_a_worker_killed(tmp_path, setup, monkeypatch, after_writing=False)
    assert summary.failed == [("05.wav", "worker process ended (exit code -9)")]
    assert summary.converted == 11 and "05.wav" not in written and len(written) == 11


@pytest.mark.skipif("fork" not in __import__("multiprocessing").get_all_start_methods(),
                    reason="the killing stand-in reaches the workers only through fork")
def test_a_worker_killed_after_writing_its_file_costs_nothing(tmp_path, setup, monkeypatch):
    """Outputs are renamed into place whole, so a worker that dies between writing and reporting has
    converted its file: the summary says so (a rerun would skip it anyway)."""
    summary, written = _batch_with_a_worker_killed(tmp_path, setup, monkeypatch, after_writing=True)
    assert summary.failed == [] and summary.converted == 12 and len(written) == 12
    assert summary.audio_seconds == pytest.approx(12.0, abs=0.01)


def test_truncated_input_is_converted_and_reported(tmp_path, setup):
    from vc.batch import batch_convert

    model_dir, target = setup
    src = tmp_path / "in"
    src.mkdir()
    sf.write(src / "cut.wav", speech(2.0), 16000, subtype="PCM_16")
    (src / "cut.wav").write_bytes((src / "cut.wav").read_bytes()[:44 + 2 * 8000])
    lines = []
    summary = batch_convert(src, tmp_path / "out", target, model_dir=model_dir, n_iter=2, device="cpu",
                            progress=False, log=lines.append)
    assert summary.converted == 1 and not summary.failed
    assert sf.info(str(tmp_path / "out" / "cut.wav")).frames == 8000
    assert len(lines) == 1 and lines[0].startswith("warning: ") and "promises 32000 samples" in lines[0] \
        and "holds 8000" in lines[0], lines


@pytest.mark.realtime
def test_ctrl_c_with_jobs_leaves_only_whole_files_then_resumes(tmp_path, setup):
    """A real SIGINT to the process group (what Ctrl-C does) in the middle of a --jobs 2 run."""
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    model_dir, target = setup
    src = tmp_path / "in"
    src.mkdir()
    for i in range(24):
        sf.write(src / f"{i:02d}.wav", speech(1.0, f0=100 + 3 * i, seed=i), 16000)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "vc.cli.batch", str(src), str(out), "--target", str(target), "--model",
           str(model_dir), "--device", "cpu", "--n-iter", "300", "--jobs", "2", "--quiet"]
    repo = Path(__file__).resolve().parent.parent
    proc = subprocess.Popen(cmd, cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=interruptible)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if out.is_dir() and len(list(out.glob("*.wav"))) >= 2:
            break
        time.sleep(0.01)
    assert proc.poll() is None, "finished before it could be interrupted: " + proc.communicate()[1]
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    done = sorted(out.glob("*.wav"))
    assert 2 <= len(done) < 24
    assert [p.name for p in out.iterdir() if not p.name.endswith(".wav")] == []  # no temporary files
    for p in done:  # every output present is whole
        assert sf.info(str(p)).frames == 16000

    from vc.batch import batch_convert

    summary = batch_convert(src, out, target, model_dir=model_dir, n_iter=2, device="cpu", progress=False, jobs=2)
    assert summary.skipped == len(done) and summary.converted == 24 - len(done) and not summary.failed
    assert len(list(out.glob("*.wav"))) == 24


def test_follow_level_reaches_the_conversion_and_nonsense_is_refused(tmp_path, setup, capsys):
    import soundfile as sf

    src = tmp_path / "in"
    src.mkdir()
    sf.write(src / "a.wav", speech(1.0), 16000)
    assert run_cli([src, tmp_path / "half"], setup) == 0
    assert run_cli([src, tmp_path / "none"], setup, ["--follow-level", "0"]) == 0
    half, none = (sf.read(tmp_path / name / "a.wav")[0] for name in ("half", "none"))
    assert half.shape == none.shape and not np.allclose(half, none, atol=1e-4)
    with pytest.raises(SystemExit) as exc:
        run_cli([src, tmp_path / "bad"], setup, ["--follow-level", "5"])
    assert exc.value.code == 2
    assert "--follow-level: must be from 0 to 2, not 5" in capsys.readouterr().err
    assert run_cli([src, tmp_path / "own"], setup, ["--fine-structure", "source", "--source-detail", "0.5"]) == 0
    own = sf.read(tmp_path / "own" / "a.wav")[0]
    assert own.shape == half.shape and not np.allclose(own, half, atol=1e-4)


@pytest.mark.parametrize("command, line", [
    ("batch", "vc-batch: interrupted; finished files are kept, run again to resume"),
    ("enroll", "vc-enroll: interrupted, nothing written"),
    ("live", "vc-live: interrupted"),
])
def test_ctrl_c_while_a_command_starts_is_one_line(command, line, monkeypatch, capsys):
    """Ctrl-C while numpy and ONNX Runtime are still being imported (the first half second of every command)
    ends with one line and status 130, not a traceback through the imports."""
    import importlib

    module = importlib.import_module(f"vc.cli.{command}")

    def interrupted(prog):
        raise KeyboardInterrupt

    def interrupted_in_a_compiled_module(prog):   # pybind11 turns the KeyboardInterrupt into this
        raise ImportError("initialization failed") from KeyboardInterrupt()

    def broken(prog):
        raise ImportError("no module named onnxruntime")

    for fault in (interrupted, interrupted_in_a_compiled_module):
        monkeypatch.setattr(module, "one_line_warnings", fault)
        assert module.main(_minimal_argv(command)) == 130
        assert capsys.readouterr().err.strip() == line
    monkeypatch.setattr(module, "one_line_warnings", broken)
    with pytest.raises(ImportError, match="no module named"):
        module.main(_minimal_argv(command))


def _minimal_argv(command: str) -> list[str]:
    return {"batch": ["in", "out", "--target", "t.npy"], "enroll": ["a.wav", "-o", "t.npy"],
            "live": ["--target", "t.npy"]}[command]


def test_every_conversion_option_reaches_the_settings_by_its_name():
    """vc-batch's and vc-live's conversion options become `ConversionSettings` fields of the same name, one
    map for both; an option left out keeps the library's default."""
    import argparse
    import dataclasses

    from vc.cli import batch, live
    from vc.cli.args import add_words_arguments, conversion_choices
    from vc.settings import DEFAULTS, ConversionSettings

    fields = {field.name for field in dataclasses.fields(ConversionSettings)}
    words = argparse.ArgumentParser()
    add_words_arguments(words)
    named = {action.dest for action in words._actions} - {"help"}
    assert named <= fields, f"options that no setting takes: {named - fields}"
    chosen = {"strength": 2.0, "n_iter": 5, "harmonics": False, "follow_level": 0.3, "fine_structure": "source",
              "source_detail": 0.2, "formant_emphasis": 0.4, "exemplar_match": "envelope", "z_share": 0.6,
              "envelope_prediction": 0.25, "pauses": "source"}
    argv = ["--strength", "2", "--n-iter", "5", "--no-harmonics", "--follow-level", "0.3", "--fine-structure",
            "source", "--source-detail", "0.2", "--formant-emphasis", "0.4", "--exemplar-match", "envelope",
            "--z-share", "0.6", "--envelope-prediction", "0.25", "--pauses", "source"]
    for parser, required in ((batch.build_parser(), ["in", "out", "--target", "t.npy"]),
                             (live.build_parser(), ["--target", "t.npy"])):
        settings = ConversionSettings.of(**conversion_choices(parser.parse_args(required + argv)))
        assert {name: getattr(settings, name) for name in chosen} == chosen
        assert ConversionSettings.of(**conversion_choices(parser.parse_args(required))) == DEFAULTS
