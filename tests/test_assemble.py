"""speechocean762 and LibriSpeech-excerpt readers, and `vc-corpus assemble`, on small trees written here."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from training.cli.corpus import main as corpus_main
from training.data.assemble import AssembleConfig, assemble_corpus, draw_splits
from training.data.corpora import CorpusError, open_corpus

SR = 16000


def _wav(path: Path, seconds=0.5, freq=150.0, fmt="WAV"):
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * SR)) / SR
    sf.write(path, (0.2 * np.sin(2 * np.pi * freq * t)).astype(np.float32), SR, format=fmt)


def make_speechocean(root: Path, speakers: dict[str, tuple[str, int, str]], per_speaker=9):
    """speakers: id -> (gender, age, part). Writes WAVE/SPEAKERnnnn/*.WAV and Kaldi lists; one extra
    unlisted WAV per speaker, as the public release has."""
    for part in ("train", "test"):
        lines = {name: [] for name in ("wav.scp", "text", "utt2spk", "spk2gender", "spk2age")}
        for spk, (gender, age, where) in speakers.items():
            if where != part:
                continue
            lines["spk2gender"].append(f"{spk}\t{gender}")
            lines["spk2age"].append(f"{spk}\t{age}")
            for i in range(per_speaker):
                utt = f"0{spk}{i:04d}"
                _wav(root / "WAVE" / f"SPEAKER{spk}" / f"{utt}.WAV", freq=100 + 10 * i)
                lines["wav.scp"].append(f"{utt}\tWAVE/SPEAKER{spk}/{utt}.WAV")
                lines["text"].append(f"{utt}\tWE CALL IT BEAR")
                lines["utt2spk"].append(f"{utt} {spk}")
            _wav(root / "WAVE" / f"SPEAKER{spk}" / f"0{spk}9999.WAV")
        (root / part).mkdir(parents=True, exist_ok=True)
        for name, rows in lines.items():
            (root / part / name).write_text("\n".join(rows) + "\n")


def make_libri_excerpts(root: Path, single: list[str], multi: dict[str, int]):
    """The Resemblyzer repository's layout: flat speaker-chapter-utt.flac files, and per-speaker folders."""
    flat = root / "audio_data" / "librispeech_train-clean-100"
    for spk in single:
        _wav(flat / f"{spk}-100-0000.flac", fmt="FLAC")
    nested = root / "audio_data" / "librispeech_test-other"
    for spk, n in multi.items():
        for i in range(n):
            _wav(nested / spk / f"{spk}-200-{i:04d}.flac", fmt="FLAC")
    ids = single + list(multi)
    (nested / "SPEAKERS.TXT").write_text(
        ";ID  |SEX| SUBSET | MINUTES | NAME\n"
        + "".join(f"{s} | {'F' if k % 2 else 'M'} | train-clean-100 | 25.0 | Reader {s}\n"
                  for k, s in enumerate(ids)))


@pytest.fixture
def sources(tmp_path):
    so = tmp_path / "speechocean762"
    people = {}
    for k in range(12):
        people[f"{k + 1:04d}"] = ("f" if k % 2 else "m", 8 if k < 6 else 30, "test" if k % 3 == 0 else "train")
    make_speechocean(so, people)
    libri = tmp_path / "libri"
    make_libri_excerpts(libri, single=[str(100 + k) for k in range(6)], multi={"1688": 9, "1998": 9})
    return so, libri


def test_speechocean_reader_keeps_speakers_gender_age_and_unlisted_files(sources):
    so, _ = sources
    corpus = open_corpus(so)
    assert corpus.kind == "speechocean762"
    utts = corpus.utterances()
    assert len(utts) == 12 * 10                       # 9 listed + 1 unlisted per speaker
    first = [u for u in utts if u.speaker == "0001"]
    assert {u.gender for u in first} == {"m"} and {u.age for u in first} == {8}
    assert sum(u.text is None for u in first) == 1    # the unlisted file has no prompt
    # the corpus's own test speakers stay test; nobody is in two splits
    assert {u.split for u in first} == {"test"}
    by_speaker = {}
    for u in utts:
        by_speaker.setdefault(u.speaker, set()).add(u.split)
    assert all(len(v) == 1 for v in by_speaker.values())


def test_librispeech_excerpts_flat_and_per_speaker(sources):
    _, libri = sources
    corpus = open_corpus(libri)
    assert corpus.kind == "librispeech"
    assert len(corpus.speakers()) == 8 and len(corpus) == 6 + 18
    genders = {u.speaker: u.gender for u in corpus.utterances()}
    assert genders["100"] == "m" and genders["101"] == "f"


def test_assemble_prefixes_ids_draws_strata_and_is_deterministic(sources, tmp_path):
    so, libri = sources
    config = AssembleConfig(test_speakers=4, dev_speakers=2, min_utterances=8)
    a = assemble_corpus(tmp_path / "a", [(None, str(so)), (None, str(libri))], config)
    b = assemble_corpus(tmp_path / "b", [(None, str(libri)), (None, str(so))], config)
    rows = list(csv.DictReader(open(tmp_path / "a" / "metadata.csv")))
    assert (tmp_path / "a" / "metadata.csv").read_text() == (tmp_path / "b" / "metadata.csv").read_text()
    assert a["splits"] == b["splits"]
    assert {r["speaker"].split("-")[0] for r in rows} == {"speechocean762", "librispeech"}
    split_of = {}
    for r in rows:
        assert split_of.setdefault(r["speaker"], r["split"]) == r["split"]     # speaker-disjoint
        assert (tmp_path / "a" / r["path"]).resolve().is_file()
    held = [s for s, v in split_of.items() if v != "train"]
    assert sum(v == "test" for v in split_of.values()) == 4 and sum(v == "dev" for v in split_of.values()) == 2
    # single-utterance LibriSpeech readers can only train; held-out speakers span sexes and ages
    assert all(not s.startswith("librispeech-10") for s in held)
    strata = a["splits"]["test"]["strata"]
    assert any("/f/" in k for k in strata) and any("/m/" in k for k in strata)
    assert any(k.endswith("child") for k in strata) and any(k.endswith("adult") for k in strata)
    # the assembled corpus opens as an open corpus with the same speakers
    corpus = open_corpus(tmp_path / "a")
    assert len(corpus.speakers("test")) == 4 and corpus.utterances("test")[0].gender in ("f", "m")


def test_assemble_skips_bad_files_with_their_name(sources, tmp_path, capsys):
    so, libri = sources
    bad = libri / "audio_data" / "librispeech_train-clean-100" / "999-100-0000.flac"
    bad.write_bytes(b"not audio at all")
    short = libri / "audio_data" / "librispeech_train-clean-100" / "998-100-0000.flac"
    _wav(short, seconds=0.05, fmt="FLAC")
    code = corpus_main(["assemble", str(tmp_path / "out"), str(so), str(libri), "--test-speakers", "2",
                        "--dev-speakers", "1"])
    assert code == 0
    err = capsys.readouterr().err
    assert "999-100-0000.flac: unreadable" in err and "998-100-0000.flac: too short" in err
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert {Path(s["path"]).name for s in summary["skipped"]} == {bad.name, short.name}
    assert "librispeech-999" not in (tmp_path / "out" / "metadata.csv").read_text()


def test_assemble_refuses_clashing_names_and_unknown_kept_source(sources, tmp_path, capsys):
    so, _ = sources
    assert corpus_main(["assemble", str(tmp_path / "o"), str(so), str(so)]) == 2
    assert "already used" in capsys.readouterr().err
    with pytest.raises(CorpusError, match="keep-splits names no source"):
        assemble_corpus(tmp_path / "o", [(None, str(so))], AssembleConfig(keep_splits=("nope",)))
    assert not (tmp_path / "o" / "metadata.csv").exists()


def test_kept_splits_do_not_change_the_draw_of_the_others():
    people = {f"a-{i}": {"stratum": ("a", "f", "adult"), "utterances": 10} for i in range(30)}
    people.update({f"b-{i}": {"stratum": ("b", "m", "child"), "utterances": 10} for i in range(30)})
    config = AssembleConfig(test_speakers=6, dev_speakers=4)
    alone = draw_splits(people, config)
    kept = {f"k-{i}": {"stratum": ("k", "m", "unknown"), "utterances": 40, "own_split": "test"}
            for i in range(5)}
    together = draw_splits({**people, **kept}, config)
    assert {s: v for s, v in together.items() if not s.startswith("k-")} == alone
    assert all(together[s] == "test" for s in kept)
    assert sum(v == "test" for v in alone.values()) == 6
    assert {s.split("-")[0] for s, v in alone.items() if v == "test"} == {"a", "b"}
