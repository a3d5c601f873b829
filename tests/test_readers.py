"""Corpus readers and audio loading, on small trees written here in each corpus's own layout."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from training.data.audio import AudioError, load_audio, read_sphere
from training.data.corpora import (
    TIMIT_CORE_TEST_SPEAKERS, TIMIT_DEV_SPEAKERS, CorpusError, FolderCorpus, LibriSpeechCorpus,
    OpenCorpus, TimitCorpus, VctkCorpus, detect_layout, open_corpus, read_timit_segments,
    speaker_split)


def tone(seconds=0.3, sr=16000, freq=220.0, amp=0.3):
    t = np.arange(int(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def write_sphere(path: Path, samples: np.ndarray, sr=16000, big_endian=False, header_size=1024,
                 extra_fields=(), channels=1):
    """A NIST_1A file as the LDC writes it: ASCII header padded to header_size, then 16-bit PCM."""
    ints = np.round(np.clip(samples, -1, 32767 / 32768) * 32768).astype(np.int16)
    if channels > 1:
        ints = np.repeat(ints[:, None], channels, axis=1)
    fields = [
        "database_id -s5 TIMIT",
        "utterance_id -s8 aks0_sa1",
        f"channel_count -i {channels}",
        f"sample_count -i {len(samples)}",
        f"sample_rate -i {sr}",
        "sample_n_bytes -i 2",
        f"sample_byte_format -s2 {'10' if big_endian else '01'}",
        "sample_sig_bits -i 16",
        "sample_coding -s3 pcm",
        *extra_fields,
        "end_head",
    ]
    head = ("NIST_1A\n" + f"{header_size:7d}\n" + "\n".join(fields) + "\n").encode("ascii")
    assert len(head) <= header_size
    head += b" " * (header_size - len(head))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(head + ints.astype(">i2" if big_endian else "<i2").tobytes())


# ------------------------------------------------------------------------------------- audio

@pytest.mark.parametrize("big_endian", [False, True])
def test_sphere_both_byte_orders_match_samples(tmp_path, big_endian):
    y = tone(0.25)
    path = tmp_path / "x.wav"
    write_sphere(path, y, big_endian=big_endian)
    data, sr = read_sphere(path)
    assert sr == 16000 and data.shape == (len(y), 1)
    np.testing.assert_allclose(data[:, 0], y, atol=1 / 32768)
    # load_audio sniffs the magic, whatever the extension says.
    np.testing.assert_allclose(load_audio(path), y, atol=1 / 32768)


def test_sphere_with_larger_header_and_resampling(tmp_path):
    y = tone(0.5, sr=8000, freq=300)
    path = tmp_path / "x.sph"
    write_sphere(path, y, sr=8000, header_size=2048, extra_fields=["comment -s11 hello world"])
    out = load_audio(path, sr=16000)
    assert abs(len(out) - 2 * len(y)) <= 2
    # A resampled 300 Hz tone keeps its energy at 300 Hz.
    spectrum = np.abs(np.fft.rfft(out * np.hanning(len(out))))
    assert abs(np.argmax(spectrum) * 16000 / len(out) - 300) < 5


def test_sphere_errors_name_the_file(tmp_path):
    y = tone(0.1)
    trunc = tmp_path / "trunc.wav"
    write_sphere(trunc, y)
    trunc.write_bytes(trunc.read_bytes()[:-100])
    with pytest.raises(AudioError, match=r"trunc\.wav: truncated"):
        load_audio(trunc)
    shorten = tmp_path / "shorten.wav"
    write_sphere(shorten, y)
    shorten.write_bytes(shorten.read_bytes().replace(b"sample_coding -s3 pcm",
                                                     b"sample_coding -s26 pcm,embedded-shorten-v2.00"))
    with pytest.raises(AudioError, match=r"shorten\.wav: compressed SPHERE"):
        load_audio(shorten)


def test_load_audio_downmixes_and_validates(tmp_path):
    left, right = tone(0.2, freq=200), tone(0.2, freq=500)
    stereo = tmp_path / "stereo.flac"
    sf.write(stereo, np.stack([left, right], axis=1), 16000, subtype="PCM_16")
    np.testing.assert_allclose(load_audio(stereo), (left + right) / 2, atol=2e-4)

    many = tmp_path / "many.wav"
    sf.write(many, np.zeros((1600, 4), np.float32), 16000)
    with pytest.raises(AudioError, match=r"many\.wav: has 4 channels"):
        load_audio(many)
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, np.float32), 16000)
    with pytest.raises(AudioError, match=r"empty\.wav: is empty"):
        load_audio(empty)
    nan = tmp_path / "nan.wav"
    sf.write(nan, np.full(1600, np.nan, np.float32), 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match=r"nan\.wav: contains NaN"):
        load_audio(nan)
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"this is not audio at all" * 10)
    with pytest.raises(AudioError, match=r"junk\.wav: unreadable audio"):
        load_audio(junk)
    with pytest.raises(AudioError, match=r"missing\.wav: cannot open"):
        load_audio(tmp_path / "missing.wav")
    # One line, so a skipped-file report stays readable.
    with pytest.raises(AudioError) as info:
        load_audio(junk)
    assert "\n" not in str(info.value)


# ------------------------------------------------------------------------------------- TIMIT

TIMIT_SPEAKERS = {  # (top, region, speaker) -> expected split
    ("TRAIN", "DR1", "FCJF0"): "train",
    ("TRAIN", "DR2", "MKLS0"): "train",
    ("TEST", "DR1", "FAKS0"): "dev",      # in the 50-speaker development set
    ("TEST", "DR1", "MDAB0"): "test",     # core test
    ("TEST", "DR3", "MJMP0"): "test",     # core test
    ("TEST", "DR4", "MBNS1"): "test",     # neither: the rest of the complete test set
}


def make_timit(root: Path, lower=False, riff=False):
    sentences = {"SA1": "She had your dark suit in greasy wash water all year.",
                 "SI943": "Biblical scholars argue history.", "SX53": "Dont ask me to carry an oily rag."}
    for i, (top, region, speaker) in enumerate(TIMIT_SPEAKERS):
        d = root / top / region / speaker
        if lower:
            d = root / top.lower() / region.lower() / speaker.lower()
        d.mkdir(parents=True)
        for j, (utt, text) in enumerate(sentences.items()):
            name = utt.lower() if lower else utt
            y = tone(0.2, freq=150 + 20 * i + 5 * j)
            if riff:
                sf.write(d / f"{name}.wav", y, 16000, subtype="PCM_16")
            else:
                write_sphere(d / f"{name}.{'wav' if lower else 'WAV'}", y, big_endian=(i % 2 == 1))
            ext = (lambda e: e.lower()) if lower else (lambda e: e)
            (d / f"{name}.{ext('TXT')}").write_text(f"0 {len(y)} {text}\n")
            (d / f"{name}.{ext('PHN')}").write_text(f"0 1000 h#\n1000 {len(y)} sh\n")
            (d / f"{name}.{ext('WRD')}").write_text(f"1000 {len(y)} she\n")
    return root


@pytest.mark.parametrize("lower,riff", [(False, False), (True, False), (False, True)])
def test_timit_layout_splits_and_side_files(tmp_path, lower, riff):
    root = make_timit(tmp_path / "timit" / "TIMIT", lower=lower, riff=riff)
    corpus = open_corpus(tmp_path / "timit")        # detection finds the TIMIT/ one level down
    assert isinstance(corpus, TimitCorpus) and corpus.root == root.resolve()
    everyone = corpus.utterances()
    assert len(everyone) == 2 * len(TIMIT_SPEAKERS)  # SA sentences are left out
    assert not any(u.utterance.endswith("_SA1") for u in everyone)
    for (top, region, speaker), split in TIMIT_SPEAKERS.items():
        assert speaker in corpus.speakers(split)
    assert corpus.speakers("core-test") == ["MDAB0", "MJMP0"]
    assert corpus.speakers("full-test") == ["FAKS0", "MBNS1", "MDAB0", "MJMP0"]
    assert set(corpus.speakers("dev")).isdisjoint(corpus.speakers("test"))
    u = next(u for u in everyone if u.utterance == "FCJF0_SX53")
    assert u.text == "Dont ask me to carry an oily rag." and u.gender == "f"
    assert set(u.annotations) == {"txt", "phn", "wrd"}
    assert read_timit_segments(u.annotations["phn"])[1][2] == "sh"
    y = load_audio(u.path)
    assert y.shape == (3200,) and np.abs(y).max() > 0.25
    with_sa = TimitCorpus(root, include_sa=True)
    assert len(with_sa.utterances()) == 3 * len(TIMIT_SPEAKERS)
    with pytest.raises(CorpusError, match="no split 'valid'"):
        corpus.utterances("valid")


def test_timit_prefers_plain_wav_over_converted_copy(tmp_path):
    d = tmp_path / "TRAIN" / "DR1" / "FCJF0"
    write_sphere(d / "SX53.WAV", tone(0.2))
    sf.write(d / "SX53.WAV.wav", tone(0.2), 16000)
    utts = TimitCorpus(tmp_path).utterances("train")
    assert [u.path.name for u in utts] == ["SX53.WAV"]


def test_standard_timit_speaker_lists():
    assert len(TIMIT_CORE_TEST_SPEAKERS) == 24 and len(TIMIT_DEV_SPEAKERS) == 50
    assert not TIMIT_CORE_TEST_SPEAKERS & TIMIT_DEV_SPEAKERS
    assert sum(s[0] == "F" for s in TIMIT_CORE_TEST_SPEAKERS) == 8


# -------------------------------------------------------------------------------------- VCTK

def test_vctk_new_layout_picks_mic1(tmp_path):
    root = tmp_path / "VCTK-Corpus-0.92"
    speakers = [f"p{n}" for n in range(225, 235)] + ["s5"]
    for k, spk in enumerate(speakers):
        for i in (1, 2):
            for mic in ("mic1", "mic2"):
                path = root / "wav48_silence_trimmed" / spk / f"{spk}_{i:03d}_{mic}.flac"
                path.parent.mkdir(parents=True, exist_ok=True)
                sf.write(path, tone(0.1, sr=48000, freq=100 + k), 48000, subtype="PCM_16")
            txt = root / "txt" / spk / f"{spk}_{i:03d}.txt"
            txt.parent.mkdir(parents=True, exist_ok=True)
            txt.write_text("Please call Stella.\n")
    corpus = open_corpus(tmp_path)
    assert isinstance(corpus, VctkCorpus)
    utts = corpus.utterances()
    assert len(utts) == 2 * len(speakers)
    assert all(u.path.name.endswith("_mic1.flac") for u in utts)
    assert utts[0].utterance == "p225_001" and utts[0].text == "Please call Stella."
    assert {u.split for u in utts} == {"train", "dev", "test"}
    assert VctkCorpus(root, mic="mic2").utterances()[0].path.name == "p225_001_mic2.flac"
    assert len(load_audio(utts[0].path)) == 1600   # 48 kHz resampled to 16 kHz


def test_vctk_old_layout(tmp_path):
    for spk in ("p225", "p226"):
        path = tmp_path / "wav48" / spk / f"{spk}_001.wav"
        path.parent.mkdir(parents=True)
        sf.write(path, tone(0.1, sr=48000), 48000)
    corpus = open_corpus(tmp_path, kind="vctk")
    assert [u.utterance for u in corpus.utterances()] == ["p225_001", "p226_001"]
    assert corpus.speakers("train") == ["p225", "p226"]   # fewer than 3 speakers: all train


# ------------------------------------------------------------------------------- LibriSpeech

def test_librispeech_with_subset_directories(tmp_path):
    root = tmp_path / "LibriSpeech"
    layout = {"train-clean-100": [("19", "198"), ("26", "495"), ("27", "123")],
              "dev-clean": [("84", "121123")], "test-clean": [("121", "127105")]}
    for subset, pairs in layout.items():
        for spk, chap in pairs:
            d = root / subset / spk / chap
            d.mkdir(parents=True)
            lines = []
            for n in range(2):
                key = f"{spk}-{chap}-{n:04d}"
                sf.write(d / f"{key}.flac", tone(0.1), 16000)
                lines.append(f"{key} WORDS OF {key}")
            (d / f"{spk}-{chap}.trans.txt").write_text("\n".join(lines) + "\n")
    corpus = open_corpus(tmp_path)
    assert isinstance(corpus, LibriSpeechCorpus) and corpus.root == root.resolve()
    utts = corpus.utterances()
    assert len(utts) == 10
    u = next(u for u in utts if u.utterance == "84-121123-0001")
    assert u.speaker == "84" and u.text == "WORDS OF 84-121123-0001"
    assert sorted(corpus.speakers("train") + corpus.speakers("dev") + corpus.speakers("test")) == \
        sorted(["19", "26", "27", "84", "121"])
    assert len(corpus.speakers("dev")) == 1 and len(corpus.speakers("test")) == 1


# ------------------------------------------------------------------------- folder and split

def test_folder_tree_nested_and_text(tmp_path):
    for spk in ("alice", "bob", "carol", "dave"):
        (tmp_path / spk / "session1").mkdir(parents=True)
        sf.write(tmp_path / spk / "session1" / "a.wav", tone(0.1), 16000)
        sf.write(tmp_path / spk / "b.ogg", tone(0.1), 16000)
        (tmp_path / spk / "b.txt").write_text("hello\n")
    (tmp_path / "alice" / "notes.md").write_text("not audio")
    corpus = open_corpus(tmp_path)
    assert isinstance(corpus, FolderCorpus) and corpus.name == tmp_path.name
    utts = [u for u in corpus.utterances() if u.speaker == "alice"]
    assert [(u.utterance, u.text) for u in utts] == [("b", "hello"), ("session1/a", None)]
    assert sum(len(corpus.speakers(s)) for s in ("train", "dev", "test")) == 4


def test_speaker_split_is_deterministic_and_disjoint():
    names = [f"spk{i:03d}" for i in range(200)]
    a = speaker_split(names)
    b = speaker_split(list(reversed(names)))
    assert a == b
    counts = {s: sum(v == s for v in a.values()) for s in ("train", "dev", "test")}
    assert counts == {"train": 160, "dev": 20, "test": 20}
    # A stable rule (SHA-256), not Python's salted hash(): pinned so that a change is noticed,
    # because it would silently move speakers between the splits of existing caches.
    assert [k for k in sorted(a) if a[k] == "test"][:3] == ["spk004", "spk016", "spk024"]
    assert speaker_split(["p225", "p226", "p227", "p228"]) == \
        {"p225": "test", "p226": "train", "p227": "dev", "p228": "train"}
    assert speaker_split(["x", "y"]) == {"x": "train", "y": "train"}


# ------------------------------------------------------------------------------ open corpus

def test_open_corpus_metadata(tmp_path):
    root = tmp_path / "open-corpus"
    (root / "wav" / "espeak-f3").mkdir(parents=True)
    rows = []
    for i, split in enumerate(["train", "train", "dev", "test"]):
        rel = f"wav/espeak-f3/{i:04d}.wav"
        sf.write(root / rel, tone(0.1), 16000)
        rows.append({"speaker": f"s{i % 3}", "utterance": f"u{i}", "path": rel, "text": "hi there",
                     "engine": "espeak-ng", "voice": "en-us+f3", "gender": "f", "split": split})
    with open(root / "metadata.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    corpus = open_corpus(root)
    assert isinstance(corpus, OpenCorpus) and corpus.name == "open-corpus"
    assert [u.utterance for u in corpus.utterances("train")] == ["u0", "u1"]
    assert corpus.utterances("dev")[0].path == (root / "wav/espeak-f3/0002.wav").resolve()
    assert corpus.utterances("test")[0].gender == "f"

    text = (root / "metadata.csv").read_text().replace(",dev\n", ",valid\n")
    (root / "metadata.csv").write_text(text)
    with pytest.raises(CorpusError, match=r"metadata\.csv:4: split 'valid'"):
        open_corpus(root).utterances()


def test_detect_layout_errors(tmp_path):
    with pytest.raises(CorpusError, match="no such directory"):
        detect_layout(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorpusError, match="unknown corpus layout"):
        open_corpus(tmp_path / "empty")
    with pytest.raises(CorpusError, match="unknown corpus kind"):
        open_corpus(tmp_path / "empty", kind="wsj")
    with pytest.raises(CorpusError, match="mic does not apply to a folder corpus"):
        open_corpus(tmp_path / "empty", kind="folder", mic="mic2")


@pytest.mark.parametrize("name,subtype", [("a.wav", "PCM_16"), ("b.wav", "PCM_24"), ("c.wav", "PCM_32"),
                                          ("d.flac", "PCM_24"), ("e.wav", "FLOAT")])
def test_integer_fast_path_matches_libsndfile_exactly(tmp_path, name, subtype):
    y = np.clip(np.random.default_rng(3).standard_normal((4000, 2)) * 0.4, -1, 1).astype(np.float32)
    sf.write(tmp_path / name, y, 16000, subtype=subtype)
    reference, _ = sf.read(tmp_path / name, dtype="float32", always_2d=True)
    np.testing.assert_array_equal(load_audio(tmp_path / name), reference.mean(axis=1, dtype=np.float32))


def test_sphere_mu_law(tmp_path):
    # G.711 reference points: 0xFF and 0x7F are zero, 0x00 and 0x80 the extremes (+-32124 / 32768).
    codes = bytes([0xFF, 0x7F, 0x00, 0x80, 0xF0])
    head = (b"NIST_1A\n   1024\nsample_count -i 5\nsample_rate -i 8000\nchannel_count -i 1\n"
            b"sample_n_bytes -i 1\nsample_coding -s4 ulaw\nend_head\n")
    (tmp_path / "u.sph").write_bytes(head.ljust(1024, b" ") + codes)
    data, sr = read_sphere(tmp_path / "u.sph")
    assert sr == 8000
    # 0xF0: exponent 0, mantissa 15 -> ((15 << 3) + 132) - 132 = 120.
    np.testing.assert_array_equal(data[:, 0] * 32768, [0, 0, -32124, 32124, 120])
