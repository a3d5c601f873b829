"""The feature cache: layout, statistics, reuse, bad files, parallel extraction and the CLI."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from training.cli.features import main as features_main
from training.data.audio import load_audio
from training.data.corpora import open_corpus
from training.data.features import (FORMAT, STD_FLOOR, FeatureCache, FeatureCacheError,
                                    build_feature_cache)
from vc.dsp import FeatureConfig, log_magnitude

SPEAKERS = [f"spk{i}" for i in range(6)]


def write_corpus(root: Path, seconds=0.5) -> Path:
    """Six speakers, three utterances each; odd speakers at 22.05 kHz so resampling is exercised."""
    rng = np.random.default_rng(1)
    for k, spk in enumerate(SPEAKERS):
        (root / spk).mkdir(parents=True, exist_ok=True)
        sr = 22050 if k % 2 else 16000
        for u in range(3):
            n = int(sr * seconds * (1 + 0.3 * u))
            t = np.arange(n) / sr
            y = 0.2 * np.sin(2 * np.pi * (120 + 30 * k) * t) + 0.02 * rng.standard_normal(n)
            sf.write(root / spk / f"u{u}.wav", y.astype(np.float32), sr, subtype="PCM_16")
    return root


def build(root, out, **kw):
    kw.setdefault("jobs", 1)
    kw.setdefault("progress", False)
    kw.setdefault("log", lambda m: None)
    return build_feature_cache(open_corpus(root), out, **kw)


def test_layout_frames_segments_and_train_statistics(tmp_path):
    root = write_corpus(tmp_path / "corpus")
    out = tmp_path / "cache"
    report = build(root, out, segment_hop=7)
    assert not report.reused and report.manifest["format"] == FORMAT
    manifest = json.loads((out / "manifest.json").read_text())
    for key in ("feature_config", "config_hash", "segment_length", "segment_hop", "corpus",
                "counts", "skipped"):
        assert key in manifest
    assert manifest["segment_length"] == 20 and manifest["segment_hop"] == 7
    assert manifest["config_hash"] == FeatureConfig().hash()
    assert manifest["corpus"] == "corpus" and manifest["corpus_info"]["kind"] == "folder"

    cache = FeatureCache(out)
    assert cache.splits == ["train", "dev", "test"] and cache.config == FeatureConfig()
    all_speakers = []
    train_frames = []
    for name in cache.splits:
        split = cache.split(name)
        assert isinstance(split.frames, np.memmap) and split.frames.dtype == np.float32
        assert split.frames.shape[1] == 200
        assert split.segments.dtype == np.int64 and split.segments.shape[1] == 2
        all_speakers += split.speakers
        assert len(split.utterances) == 3 * len(split.speakers)
        for i, u in enumerate(split.utterances):
            # The stored rows are exactly the kernel's features of the 16 kHz audio.
            expected = log_magnitude(load_audio(u.path), cfg=FeatureConfig())
            np.testing.assert_array_equal(split.utterance_frames(i), expected)
            starts = split.segments[split.segments[:, 0] == i, 1] - u.frame_start
            np.testing.assert_array_equal(starts, np.arange(0, u.n_frames - 19, 7))
            if name == "train":
                train_frames.append(expected)
        assert split.segment(len(split) - 1).shape == (20, 200)
        seg_utts = split.segments[:, 0]
        assert [split.speakers[s] for s in split.segment_speakers[:3]] == \
            [split.utterances[j].speaker for j in seg_utts[:3]]
    assert sorted(all_speakers) == SPEAKERS                     # speaker-disjoint, nobody lost
    x = np.concatenate(train_frames).astype(np.float64)
    np.testing.assert_allclose(cache.mean, x.mean(axis=0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(cache.std, np.maximum(x.std(axis=0), STD_FLOOR), rtol=1e-4)
    z = cache.normalise(x)
    assert abs(z.mean()) < 1e-3 and abs(z.std() - 1) < 0.05

    # A 22.05 kHz file is resampled: its frame count is that of its 16 kHz duration.
    odd = next(u for u in cache.split("train").utterances + cache.split("dev").utterances
               + cache.split("test").utterances if u.utterance == "u0" and u.speaker == "spk1")
    assert odd.n_frames == 1 + 8000 // 160


def test_second_run_reuses_and_changes_rebuild(tmp_path):
    root = write_corpus(tmp_path / "corpus")
    out = tmp_path / "cache"
    first = build(root, out)
    stamp = (out / "train" / "frames.npy").stat().st_mtime_ns
    again = build(root, out)
    assert again.reused and "reused" in again.summary()
    assert (out / "train" / "frames.npy").stat().st_mtime_ns == stamp

    assert not build(root, out, segment_hop=5).reused                       # changed config
    assert json.loads((out / "manifest.json").read_text())["segment_hop"] == 5
    assert build(root, out, segment_hop=5).reused
    sf.write(root / "spk0" / "u9.wav", np.zeros(16000, np.float32) + 0.1, 16000)  # new input
    assert not build(root, out, segment_hop=5).reused
    assert not build(root, out, segment_hop=5, force=True).reused
    (out / "std.npy").unlink()                                             # damaged cache
    rebuilt = build(root, out, segment_hop=5)
    assert not rebuilt.reused and (out / "std.npy").is_file()
    total = lambda r: sum(c["utterances"] for c in r.manifest["counts"].values())  # noqa: E731
    assert total(rebuilt) == total(first) + 1
    assert not list(tmp_path.glob(".cache.*"))                             # no temporaries left


def test_bad_files_are_skipped_and_counted(tmp_path):
    root = write_corpus(tmp_path / "corpus")
    spk = root / "spk0"
    sf.write(spk / "short.wav", np.full(2000, 0.1, np.float32), 16000)     # 13 frames < 20
    sf.write(spk / "empty.wav", np.zeros(0, np.float32), 16000)
    sf.write(spk / "nan.wav", np.full(16000, np.nan, np.float32), 16000, subtype="FLOAT")
    sf.write(spk / "surround.wav", np.zeros((16000, 6), np.float32), 16000)
    (spk / "garbage.wav").write_bytes(b"\x00not audio" * 50)
    lines = []
    report = build(root, tmp_path / "cache", log=lines.append)
    reasons = {Path(s["path"]).name: s["reason"] for s in report.skipped}
    assert set(reasons) == {"short.wav", "empty.wav", "nan.wav", "surround.wav", "garbage.wav"}
    assert "too short" in reasons["short.wav"] and "empty" in reasons["empty.wav"]
    assert "NaN" in reasons["nan.wav"] and "6 channels" in reasons["surround.wav"]
    assert "unreadable" in reasons["garbage.wav"]
    skipped_lines = [m for m in lines if m.startswith("skipped ")]
    assert len(skipped_lines) == 5 and all(str(spk) in m for m in skipped_lines)
    split_of_spk0 = next(s for s in report.manifest["counts"]
                         if "spk0" in FeatureCache(tmp_path / "cache").split(s).speakers)
    assert report.manifest["counts"][split_of_spk0]["skipped"] == 5
    assert "5 file(s) skipped" in report.summary()


def test_parallel_build_matches_serial(tmp_path):
    root = write_corpus(tmp_path / "corpus")
    build(root, tmp_path / "one", jobs=1)
    build(root, tmp_path / "two", jobs=2)
    a, b = FeatureCache(tmp_path / "one"), FeatureCache(tmp_path / "two")
    for name in a.splits:
        np.testing.assert_array_equal(a.split(name).frames, b.split(name).frames)
        np.testing.assert_array_equal(a.split(name).segments, b.split(name).segments)
        assert a.split(name).utterances == b.split(name).utterances
    np.testing.assert_array_equal(a.mean, b.mean)


def test_failed_build_leaves_the_old_cache_and_no_temporaries(tmp_path):
    root = write_corpus(tmp_path / "corpus")
    out = tmp_path / "cache"
    build(root, out)
    before = (out / "manifest.json").read_text()
    train = open_corpus(root).speakers("train")
    for spk in train:                         # every train file becomes unusable
        for f in (root / spk).iterdir():
            f.write_bytes(b"broken")
    with pytest.raises(FeatureCacheError, match="no usable audio in the train split"):
        build(root, out)
    assert (out / "manifest.json").read_text() == before
    assert FeatureCache(out).split("train").frames.shape[0] > 0
    assert not list(tmp_path.glob(".cache.*"))


def test_refuses_to_replace_a_directory_that_is_not_a_cache(tmp_path):
    root = write_corpus(tmp_path / "corpus")
    out = tmp_path / "precious"
    out.mkdir()
    (out / "thesis.tex").write_text("do not delete")
    with pytest.raises(FeatureCacheError, match="not a feature cache; refusing"):
        build(root, out)
    assert (out / "thesis.tex").read_text() == "do not delete"


def test_cache_reader_errors(tmp_path):
    with pytest.raises(FeatureCacheError, match="no manifest.json"):
        FeatureCache(tmp_path)
    root = write_corpus(tmp_path / "corpus")
    build(root, tmp_path / "cache", splits=["test"])      # train is added for the statistics
    cache = FeatureCache(tmp_path / "cache")
    assert cache.splits == ["train", "test"]
    with pytest.raises(FeatureCacheError, match="no split 'dev'"):
        cache.split("dev")
    segments_path = tmp_path / "cache" / "train" / "segments.npy"
    good = np.load(segments_path)
    first = cache.split("train").utterances[0]
    np.save(segments_path, np.array([[0, 10**9]], np.int64))
    with pytest.raises(FeatureCacheError, match="segments point outside"):
        FeatureCache(tmp_path / "cache").split("train")
    # inside frames.npy but straddling the end of its utterance: the same check as training's reader
    np.save(segments_path, np.array([[0, first.frame_start + first.n_frames - 5]], np.int64))
    with pytest.raises(FeatureCacheError, match="runs outside its utterance"):
        FeatureCache(tmp_path / "cache").split("train")
    np.save(segments_path, good)
    assert len(FeatureCache(tmp_path / "cache").split("train")) == len(good)


def test_cli_builds_then_reuses_and_reports_errors(tmp_path, capsys):
    root = write_corpus(tmp_path / "corpus")
    out = tmp_path / "cache"
    args = [str(root), str(out), "--jobs", "1", "--no-progress", "--segment-hop", "10"]
    assert features_main(args) == 0
    assert capsys.readouterr().out.startswith(f"built feature cache {out}")
    assert features_main(args) == 0
    assert capsys.readouterr().out.startswith(f"reused feature cache {out}")
    assert features_main([str(tmp_path / "missing"), str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing: no such directory" in err
    assert features_main([str(root), str(out), "--split", "nope", "--no-progress"]) == 2
    assert "no split 'nope'" in capsys.readouterr().err
    assert os.path.isdir(out)


def test_open_corpus_with_unusable_test_split(tmp_path):
    """A split whose files are all unusable gets counts but no directory (readers skip it)."""
    root = tmp_path / "open-corpus"
    rows = ["speaker,utterance,path,text,engine,voice,gender,split"]
    for i, split in enumerate(["train", "train", "dev", "test"]):
        rel = f"s{i}/u{i}.wav"
        (root / f"s{i}").mkdir(parents=True)
        if split != "test":
            sf.write(root / rel, 0.1 * np.sin(np.arange(8000) / 5).astype(np.float32), 16000)
        rows.append(f"s{i},u{i},{rel},hello,espeak-ng,en,f,{split}")
    (root / "metadata.csv").write_text("\n".join(rows) + "\n")
    report = build(root, tmp_path / "cache")
    assert report.manifest["counts"]["test"] == {"utterances": 0, "speakers": 0, "frames": 0,
                                                 "segments": 0, "audio_seconds": 0.0, "skipped": 1}
    assert "cannot open" in report.skipped[0]["reason"]
    assert not (tmp_path / "cache" / "test").exists()
    assert FeatureCache(tmp_path / "cache").splits == ["train", "dev"]


def test_extractor_shards_are_deleted_once_read(tmp_path):
    from training.data.features import FeatureExtractor
    root = write_corpus(tmp_path / "corpus")
    paths = sorted(str(p) for p in root.rglob("*.wav")) + [str(tmp_path / "missing.wav")]
    serial = list(FeatureExtractor(jobs=1).map(paths))
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    # One shard per file: every new file makes the worker's previous shard deletable.
    with FeatureExtractor(jobs=2, scratch=scratch, shard_bytes=1) as extractor:
        for (a, seconds_a), (b, seconds_b) in zip(serial, extractor.map(paths)):
            if a is None:
                assert b is None and "cannot open" in seconds_b
                continue
            np.testing.assert_array_equal(a, b)
            assert seconds_a == seconds_b
        # Workers run ahead, but once everything is read only each worker's newest shard is left.
        assert 1 <= len(list(scratch.iterdir())) <= 2


def test_timit_sphere_through_the_cli(tmp_path, capsys):
    import importlib.util
    # The reader tests' TIMIT writer (SPHERE headers), loaded by path: works in any import mode.
    spec = importlib.util.spec_from_file_location("reader_fixtures",
                                                  Path(__file__).with_name("test_readers.py"))
    fixtures = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fixtures)
    fixtures.make_timit(tmp_path / "TIMIT")
    out = tmp_path / "cache"
    assert features_main([str(tmp_path / "TIMIT"), str(out), "--jobs", "2", "--no-progress",
                          "--split", "dev,test,core-test"]) == 0
    cache = FeatureCache(out)
    assert cache.corpus == "timit" and cache.splits == ["train", "dev", "test", "core-test"]
    assert cache.split("core-test").speakers == ["MDAB0", "MJMP0"]
    assert cache.split("dev").speakers == ["FAKS0"]
    u = cache.split("train").utterances[0]
    np.testing.assert_array_equal(cache.split("train").utterance_frames(0),
                                  log_magnitude(load_audio(u.path)))
    assert "0 file(s) skipped" in capsys.readouterr().out
