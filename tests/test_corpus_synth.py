"""vc-corpus synth: a tiny real build with espeak-ng and flite (a few seconds of synthesis)."""

import csv
import dataclasses
import json
import random
import shutil

import numpy as np
import pytest
import soundfile as sf

from training.cli import corpus as corpus_cli
from training.data import distinct, sentences, synth, voices

SPEAKERS = 4
UTTERANCES = 3


def tiny_candidates():
    stock = {v.speaker: v for v in voices.stock_espeak_voices()}
    slt = voices.Voice(speaker="flite_slt", engine="flite", name="slt", gender="f",
                      params=(("voice", "slt"),))
    # The same voice under a second id: the distinctness check must reject it.
    slt_again = dataclasses.replace(slt, speaker="flite_slt_again")
    return [slt, slt_again, stock["espeak_m3"], stock["espeak_f3"],
            voices.generated_espeak_voice(0, 1)]


def build(out, seed=0):
    config = synth.BuildConfig(speakers=SPEAKERS, utterances=UTTERANCES, seed=seed,
                               engines=("espeak-ng", "flite"))
    return synth.build_corpus(out, config, jobs=2, candidates=tiny_candidates(), progress=False)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus")
    summary = build(out)
    return out, summary


def read_metadata(out):
    with open(out / "metadata.csv", newline="") as handle:
        reader = csv.DictReader(handle)
        return reader.fieldnames, list(reader)


def test_layout_metadata_and_audio(corpus):
    out, summary = corpus
    columns, rows = read_metadata(out)
    assert columns == ["speaker", "utterance", "path", "text", "engine", "voice", "gender", "split"]
    assert len(rows) == SPEAKERS * UTTERANCES
    speakers = sorted({r["speaker"] for r in rows})
    assert speakers == sorted(["flite_slt", "espeak_m3", "espeak_f3", "espeak_gen001"])
    for row in rows:
        path = out / row["path"]
        assert path.parent.name == row["speaker"] and path.name == row["utterance"] + ".wav"
        info = sf.info(str(path))
        assert (info.samplerate, info.channels, info.subtype, info.format) == (16000, 1, "PCM_16", "WAV")
        audio, _ = sf.read(str(path), dtype="float32")
        assert 2.0 <= len(audio) / 16000 <= 5.0
        # About 100 ms of silence at each end, speech in between.
        assert np.max(np.abs(audio[:1200])) < 1e-3 and np.max(np.abs(audio[-1200:])) < 1e-3
        assert np.sqrt(np.mean(audio ** 2)) > 0.02
        assert row["engine"] in ("espeak-ng", "flite")
        assert row["voice"].startswith(row["engine"] + ":")
        assert row["gender"] in ("m", "f", "unknown")
        assert row["split"] in ("train", "dev", "test")
    assert {r["gender"] for r in rows if r["speaker"] == "espeak_m3"} == {"m"}
    # The first two sentences are shared by all speakers; the others differ between speakers.
    for utterance, text in zip(("u000", "u001"), sentences.SHARED_SENTENCES):
        assert {r["text"] for r in rows if r["utterance"] == utterance} == {text}
    own = [r["text"] for r in rows if r["utterance"] == "u002"]
    assert len(set(own)) == SPEAKERS
    splits = {r["speaker"]: r["split"] for r in rows}
    assert set(splits.values()) == {"train", "dev", "test"}
    assert summary["split_sizes"] == {s: list(splits.values()).count(s) for s in ("train", "dev", "test")}
    assert json.loads((out / "summary.json").read_text())["files"] == len(rows)
    assert not list(out.glob("*/.*.tmp"))


def test_distinctness_rejects_the_same_voice_twice(corpus):
    _, summary = corpus
    check = summary["distinctness"]
    assert check["threshold"] == distinct.DEFAULT_THRESHOLD
    rejected = {r["voice"]: r for r in check["rejected"]}
    assert rejected["flite_slt_again"]["nearest"] == "flite_slt"
    assert rejected["flite_slt_again"]["distance"] < 0.05
    assert check["kept"] == SPEAKERS
    assert check["kept_min_pairwise"] >= check["threshold"]
    assert check["kept_median_pairwise"] >= check["kept_min_pairwise"]


def test_select_distinct_is_greedy_with_a_threshold():
    rng = np.random.default_rng(0)
    a = {"envelope_db": list(rng.normal(0, 5, 40)), "pitch_median_st": 0.0, "pitch_iqr_st": 2.0}
    b = dict(a, pitch_median_st=12.0)   # an octave higher: 2 units away
    c = dict(a, pitch_median_st=1.0)    # a semitone away from a: a near-duplicate
    assert distinct.voice_distance(a, a) == 0.0
    assert distinct.voice_distance(a, b) == pytest.approx(2.0)
    kept, rejected = distinct.select_distinct([a, c, b, a], wanted=10, threshold=1.0)
    assert kept == [0, 2]
    assert set(rejected) == {1, 3} and rejected[3] == (0, 0.0)
    kept, _ = distinct.select_distinct([a, b, dict(a, pitch_median_st=24.0)], wanted=2, threshold=1.0)
    assert kept == [0, 1]


def test_voice_description_measures_pitch_with_the_projects_yin():
    sr = 16000
    t = np.arange(int(1.5 * sr)) / sr
    clips = []
    for f0 in (150.0, 300.0):            # an octave apart: 12 semitones
        phase = 2 * np.pi * f0 * t
        clips.append([(0.3 * sum(np.sin(k * phase) / k for k in range(1, 12))).astype(np.float32)])
    low, high = (distinct.describe_audio(c) for c in clips)
    assert low["pitch_median_st"] == pytest.approx(12 * np.log2(150 / 100), abs=0.1)
    assert high["pitch_median_st"] - low["pitch_median_st"] == pytest.approx(12.0, abs=0.1)
    assert low["pitch_iqr_st"] < 0.1 and low["voiced_frames"] > 100


def test_same_seed_same_corpus_and_resume(corpus, tmp_path):
    out, _ = corpus
    again = tmp_path / "again"
    build(again)
    assert (again / "metadata.csv").read_bytes() == (out / "metadata.csv").read_bytes()
    for wav in sorted(out.glob("*/*.wav")):
        assert (again / wav.relative_to(out)).read_bytes() == wav.read_bytes(), wav

    # Interrupted build: one finished file lost, a half-written temporary left behind.
    lost = again / "espeak_f3" / "u002.wav"
    lost.unlink()
    stray = again / "flite_slt" / ".u002.wav.12345.tmp"
    stray.write_bytes(b"RIFF half a file")
    untouched = again / "espeak_m3" / "u002.wav"
    mtime = untouched.stat().st_mtime_ns
    summary = build(again)
    assert summary["build"]["files_made_this_run"] == 1
    assert summary["build"]["stray_temporaries_removed"] == 1
    assert not stray.exists()
    assert lost.read_bytes() == (out / "espeak_f3" / "u002.wav").read_bytes()
    assert untouched.stat().st_mtime_ns == mtime
    assert (again / "metadata.csv").read_bytes() == (out / "metadata.csv").read_bytes()


def test_other_settings_in_the_same_directory_are_refused(corpus, tmp_path, capsys):
    out, _ = corpus
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    code = corpus_cli.main(["synth", str(copy), "--speakers", "4", "--utterances", "3",
                            "--seed", "1", "--quiet"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "other settings" in err[0]


def test_missing_synthesiser_is_one_line_with_the_apt_fix(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))
    code = corpus_cli.main(["synth", str(tmp_path / "out"), "--quiet"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "espeak-ng not found" in err[0] and "apt-get install -y espeak-ng" in err[0]
    assert not (tmp_path / "out").exists()


def test_splits_by_speaker_sizes_and_determinism():
    pool = [voices.Voice(speaker=f"s{i:02d}", engine="espeak-ng", name="x",
                         gender="mf"[i % 2]) for i in range(80)]
    splits = synth.assign_splits(pool, seed=3)
    assert splits == synth.assign_splits(list(reversed(pool)), seed=3)
    sizes = {s: list(splits.values()).count(s) for s in ("train", "dev", "test")}
    assert sizes["test"] >= 16 and sizes["dev"] >= 8 and sum(sizes.values()) == 80
    test_genders = [v.gender for v in pool if splits[v.speaker] == "test"]
    assert test_genders.count("m") == test_genders.count("f")
    with pytest.raises(synth.CorpusError):
        synth.assign_splits(pool[:2], seed=0)


def test_sentences_are_deterministic_varied_and_sized():
    first = sentences.sentence_for(7, "spk", 5, 0, 6, 10)
    assert first == sentences.sentence_for(7, "spk", 5, 0, 6, 10)
    many = {sentences.sentence_for(7, f"spk{i}", 3, 0, 6, 10) for i in range(200)}
    assert len(many) >= 190
    assert all(6 <= sentences.word_count(s) <= 10 for s in many)
    assert sentences.vocabulary_size() >= 400
    rng = random.Random(0)
    assert all(s.isascii() for s in (sentences.generate_sentence(rng) for _ in range(200)))
