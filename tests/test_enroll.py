"""vc.speakers / vc-enroll: averaging f over speech segments, the energy gate, loading speaker.npy."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from helpers import speech, tiny_model_dir

SR = 16000


def test_enrol_averages_f_over_speech_segments_only(tmp_path, tiny):
    from vc.speakers import enroll, speech_segments

    seg = 0.2
    voice = speech(1.0)                            # 5 segments
    silence = np.zeros(int(0.6 * SR), np.float32)  # 3 segments
    audio = np.concatenate([voice, silence, speech(0.45, f0=180, seed=1)])  # 2 whole segments + a tail
    sf.write(tmp_path / "a.wav", audio, SR, subtype="FLOAT")

    segments, silent = speech_segments(audio, tiny)
    assert segments.shape == (7, 20, 200) and silent == 3

    result = enroll([tmp_path / "a.wav"], tiny)
    assert result.segments == 7 and result.skipped_segments == 3 and result.files == 1
    assert result.speech_seconds == pytest.approx(7 * seg)
    assert result.audio_seconds == pytest.approx(audio.size / SR)
    assert result.embedding.dtype == np.float32 and result.embedding.shape == (8,)
    expected = tiny.encode(tiny.normalise(segments))[0].mean(axis=0)
    np.testing.assert_allclose(result.embedding, expected, rtol=1e-5, atol=1e-6)
    assert "1.4 s of speech in 7 segments" in result.summary()
    # The register: 5 voiced segments at 140 Hz and 2 at 180 Hz, each with a +-5 % vibrato.
    assert np.exp(result.register.log_mean) == pytest.approx(140.0, rel=0.04)
    assert 0.02 < result.register.log_std < 0.3


def test_folders_rates_and_channels(tmp_path, tiny):
    from vc.speakers import enroll

    (tmp_path / "spk" / "sub").mkdir(parents=True)
    mono = speech(0.9, seed=2)
    sf.write(tmp_path / "spk" / "one.wav", mono, SR)
    # The same signal at 44.1 kHz stereo in FLAC, in a subfolder: the same 4 segments come out.
    import soxr

    hi = soxr.resample(mono, SR, 44100)
    sf.write(tmp_path / "spk" / "sub" / "two.flac", np.stack([hi, hi], axis=1), 44100)
    (tmp_path / "spk" / "notes.txt").write_text("not audio")
    result = enroll([tmp_path / "spk"], tiny)
    assert result.files == 2 and result.segments == 8


def test_cli_writes_speaker_and_reports(tmp_path, tiny_dir, capsys):
    from vc.cli.enroll import main
    from vc.speakers import load_speaker

    sf.write(tmp_path / "a.wav", speech(1.0), SR)
    out = tmp_path / "target.npy"
    assert main([str(tmp_path / "a.wav"), "-o", str(out), "--model", str(tiny_dir), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "1.0 s of speech in 5 segments" in printed and str(out) in printed
    assert f"{np.load(out, allow_pickle=False)['envelopes'].shape[0]} envelopes kept" in printed
    speaker = load_speaker(out, f_dim=8)
    assert speaker.f.shape == (8,) and speaker.f.dtype == np.float32
    assert np.exp(speaker.register.log_mean) == pytest.approx(140.0, rel=0.04)
    assert "median F0 14" in printed
    record = np.load(out, allow_pickle=False)   # a plain numpy record, no pickle
    assert record.dtype.names == ("f", "log_f0_mean", "log_f0_std", "z_mean", "z_std", "envelopes",
                                  "voiced_envelopes", "voiced_f0", "voiced_fine", "envelope_z")
    # one z per kept envelope, of the model's width, in the envelopes' order
    assert record["envelope_z"].shape == (record["envelopes"].shape[0], 4)
    np.testing.assert_array_equal(record["envelope_z"], speaker.envelope_z)
    assert f"{record['voiced_f0'].shape[0]} voiced frames" in printed
    assert np.median(record["voiced_f0"].astype(np.float64)) == pytest.approx(140.0, rel=0.04)
    assert record["voiced_fine"].shape == (record["voiced_f0"].shape[0], 200)
    np.testing.assert_array_equal(record["f"], speaker.f)
    assert speaker.z_stats.mean.shape == speaker.z_stats.std.shape == (4,)
    np.testing.assert_array_equal(record["z_std"], speaker.z_stats.std)


def test_enrol_measures_z_over_speech_frames(tmp_path, tiny):
    from vc.levels import frame_level_db
    from vc.speakers import enroll, speech_segments

    # Speech, then a near-silent stretch inside the last speech segment: its frames must not count.
    audio = np.concatenate([speech(0.9), 1e-5 * speech(0.1, seed=3)])
    sf.write(tmp_path / "a.wav", audio, SR, subtype="FLOAT")
    segments, _ = speech_segments(audio, tiny)
    _, _, z, _ = tiny.encode(tiny.normalise(segments))
    levels = frame_level_db(segments, tiny.feature_config)
    loud = (levels > -50.0) & (levels > levels.max() - 35.0)
    assert 0 < (~loud).sum() < loud.size   # the quiet tail is in a speech segment but not speech
    stats = enroll([tmp_path / "a.wav"], tiny).z_stats
    np.testing.assert_allclose(stats.mean, z[loud].mean(axis=0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(stats.std, z[loud].std(axis=0), rtol=1e-3, atol=1e-5)
    assert not np.allclose(stats.mean, z.reshape(-1, 4).mean(axis=0), atol=1e-4)
    # The envelopes of the same frames, as float16 coefficients.
    from vc.exemplars import envelope_coefficients

    envelopes = enroll([tmp_path / "a.wav"], tiny).envelopes
    assert envelopes.dtype == np.float16 and envelopes.shape == (int(loud.sum()), 48)
    expected = envelope_coefficients(segments[loud])
    order = np.lexsort(envelopes.astype(np.float32).T[::-1])          # kept shuffled: compare as sets
    expected_order = np.lexsort(expected.astype(np.float16).astype(np.float32).T[::-1])
    np.testing.assert_allclose(envelopes[order], expected[expected_order], rtol=2e-3, atol=2e-2)
    assert not np.allclose(envelopes.astype(np.float32), expected, rtol=2e-3, atol=2e-2)   # not in time order


def test_enrolment_keeps_at_most_max_exemplars_spread_over_all_files(tmp_path, tiny, monkeypatch):
    import vc.exemplars
    import vc.speakers

    for i in range(3):
        sf.write(tmp_path / f"{i}.wav", speech(1.0, f0=120 + 40 * i, seed=i), SR)
    everything = vc.speakers.enroll([tmp_path], tiny).envelopes
    assert everything.shape[0] > 50
    monkeypatch.setattr(vc.speakers, "exemplar_set", lambda c: vc.exemplars.exemplar_set(c, 50))
    thinned = vc.speakers.enroll([tmp_path], tiny).envelopes
    assert thinned.shape[0] == 50
    rows = {r.tobytes() for r in everything}
    assert all(r.tobytes() in rows for r in thinned)        # a subset of the same envelopes

    monkeypatch.setattr(vc.speakers, "voiced_exemplar_set", lambda fr, f0: vc.exemplars.voiced_exemplar_set(fr, f0, 60))
    voiced = vc.speakers.enroll([tmp_path], tiny).voiced
    assert voiced.f0.shape == (60,) and voiced.envelopes.shape == (60, 48) and voiced.fine.shape == (60, 200)
    pitches = np.sort(voiced.f0.astype(np.float64))          # every file's voice kept: 120, 160, 200 Hz
    for hz in (120.0, 160.0, 200.0):
        assert np.min(np.abs(pitches / hz - 1.0)) < 0.04


def test_cli_errors_are_one_line_and_write_nothing(tmp_path, tiny_dir, capsys):
    from vc.cli.enroll import main

    sf.write(tmp_path / "quiet.wav", np.zeros(SR, np.float32), SR)
    (tmp_path / "broken.wav").write_bytes(b"RIFF nonsense")
    out = tmp_path / "t.npy"
    args = ["-o", str(out), "--model", str(tiny_dir), "--device", "cpu"]
    assert main([str(tmp_path / "quiet.wav")] + args) == 1
    err = capsys.readouterr().err
    assert "no speech found" in err and "Traceback" not in err
    assert main([str(tmp_path / "broken.wav")] + args) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("vc-enroll: error: ") and "broken.wav: cannot read audio" in err
    assert main([str(tmp_path / "missing.wav")] + args) == 1
    assert "missing.wav: no such file or folder" in capsys.readouterr().err
    assert not out.exists()
    assert not list(tmp_path.glob(".t.npy*"))


def test_load_speaker_checks_everything(tmp_path, tiny):
    from vc.speakers import SpeakerError, load_speaker, save_speaker

    from vc.pitch import Register
    from vc.speakers import Speaker
    from vc.exemplars import VoicedExemplars

    good = np.linspace(-1, 1, 8).astype(np.float32)
    save_speaker(tmp_path / "good.npy", good)       # a bare code: a target without a pitch register
    loaded = load_speaker(tmp_path / "good.npy", tiny)
    np.testing.assert_array_equal(loaded.f, good)
    assert loaded.register is None
    save_speaker(tmp_path / "full.npy", Speaker(good, Register(np.log(200.0), 0.1)))
    loaded = load_speaker(tmp_path / "full.npy", tiny)
    np.testing.assert_array_equal(loaded.f, good)
    assert loaded.register == Register(pytest.approx(np.log(200.0)), pytest.approx(0.1))

    def record(f, mean=np.log(150.0), std=0.1, names=("f", "log_f0_mean", "log_f0_std")):
        rec = np.zeros((), np.dtype([(names[0], f.dtype, f.shape), (names[1], "<f4"), (names[2], "<f4")]))
        rec[names[0]], rec[names[1]], rec[names[2]] = f, mean, std
        return rec

    cases = {
        "wrong_size.npy": (np.zeros(9, np.float32), "size 9 does not match the model's f_dim 8"),
        "float64.npy": (np.zeros(8, np.float64), "dtype is float64, expected float32"),
        "matrix.npy": (np.zeros((1, 8), np.float32), r"shape is \(1, 8\)"),
        "nan.npy": (np.array([np.nan] + [0] * 7, np.float32), "NaN or infinite"),
        "ints.npy": (np.zeros(8, np.int32), "dtype is int32"),
        "record_size.npy": (record(np.zeros(9, np.float32)), "size 9 does not match the model's f_dim 8"),
        "record_pitch.npy": (record(good, mean=np.log(5000.0)), "log_f0_mean .* between 20 and 2000 Hz"),
        "record_nan.npy": (record(good, std=np.nan), "log_f0_std nan is outside"),
        "record_names.npy": (record(good, names=("f", "mean", "std")), "expected one record with fields"),
        "record_f64.npy": (record(good.astype(np.float64)), "field f has dtype float64"),
    }
    def with_z(mean, std, register=True):
        fields = [("f", "<f4", (8,))] + ([("log_f0_mean", "<f4"), ("log_f0_std", "<f4")] if register else [])
        rec = np.zeros((), np.dtype(fields + [("z_mean", mean.dtype, mean.shape), ("z_std", std.dtype, std.shape)]))
        rec["f"], rec["z_mean"], rec["z_std"] = good, mean, std
        if register:
            rec["log_f0_mean"], rec["log_f0_std"] = np.log(150.0), 0.1
        return rec

    def with_envelopes(envelopes):
        rec = np.zeros((), np.dtype([("f", "<f4", (8,)), ("envelopes", envelopes.dtype, envelopes.shape)]))
        rec["f"], rec["envelopes"] = good, envelopes
        return rec

    def with_voiced(f0, fine):
        rec = np.zeros((), np.dtype([("f", "<f4", (8,)), ("voiced_envelopes", "<f2", (5, 48)),
                                     ("voiced_f0", f0.dtype, f0.shape), ("voiced_fine", fine.dtype, fine.shape)]))
        rec["f"], rec["voiced_f0"], rec["voiced_fine"] = good, f0, fine
        return rec

    four = np.ones(4, np.float32)
    cases.update({
        "z_size.npy": (with_z(np.zeros(5, np.float32), np.ones(5, np.float32)),
                       "size 5 do not match the model's z_dim 4"),
        "z_std.npy": (with_z(np.zeros(4, np.float32), -four), "z_std finite and positive"),
        "z_nan.npy": (with_z(np.full(4, np.nan, np.float32), four), "z_mean must be finite"),
        "z_f64.npy": (with_z(np.zeros(4), np.ones(4)), "must be float32 vectors"),
        "env_size.npy": (with_envelopes(np.zeros((5, 40), np.float16)), r"shape \(n, 48\)"),
        "env_f32.npy": (with_envelopes(np.zeros((5, 48), np.float32)), "must be float16"),
        "env_nan.npy": (with_envelopes(np.full((5, 48), np.nan, np.float16)), "envelopes contain NaN"),
        "voiced_bins.npy": (with_voiced(np.full(5, 120, np.float16), np.zeros((5, 150), np.float16)),
                            "voiced_fine has 150 frequency bins, the model has 200"),
        "voiced_rows.npy": (with_voiced(np.full(4, 120, np.float16), np.zeros((5, 200), np.float16)),
                            r"shapes \(m, 48\), \(m,\) and \(m, n_features\)"),
        "voiced_f0.npy": (with_voiced(np.full(5, 5, np.float16), np.zeros((5, 200), np.float16)),
                          "voiced_f0 holds values outside 20 to 2000 Hz"),
        "voiced_inf.npy": (with_voiced(np.full(5, 120, np.float16), np.full((5, 200), np.inf, np.float16)),
                           "voiced_fine contain NaN or infinite"),
    })
    for name, (arr, message) in cases.items():
        np.save(tmp_path / name, arr)
        with pytest.raises(SpeakerError, match=message):
            load_speaker(tmp_path / name, tiny)

    # z statistics with or without a register round-trip; a file without them still loads.
    from vc.z_statistics import CodeStats

    stats = CodeStats(np.arange(4, dtype=np.float32), np.full(4, 0.5, np.float32))
    envelopes = np.random.default_rng(0).normal(size=(7, 48)).astype(np.float16)
    voiced = VoicedExemplars(envelopes[:3], np.array([100, 150, 210], np.float16),
                             np.random.default_rng(1).normal(size=(3, 200)).astype(np.float16))
    for register in (None, Register(np.log(120.0), 0.2)):
        save_speaker(tmp_path / "z.npy", Speaker(good, register, stats, envelopes, voiced))
        loaded = load_speaker(tmp_path / "z.npy", tiny)
        np.testing.assert_array_equal(loaded.envelopes, envelopes)
        for name in ("envelopes", "f0", "fine"):
            np.testing.assert_array_equal(getattr(loaded.voiced, name), getattr(voiced, name))
        np.testing.assert_array_equal(loaded.z_stats.mean, stats.mean)
        np.testing.assert_array_equal(loaded.z_stats.std, stats.std)
        assert (loaded.register is None) == (register is None)
        if register is not None:
            assert loaded.register == Register(pytest.approx(register.log_mean), pytest.approx(register.log_std))
    assert load_speaker(tmp_path / "full.npy", tiny).z_stats is None

    np.save(tmp_path / "pickled.npy", np.array([{"evil": 1}], dtype=object))  # np.save pickles object arrays
    with pytest.raises(SpeakerError, match="pickled.npy: not a plain numeric .npy"):
        load_speaker(tmp_path / "pickled.npy", tiny)
    np.savez(tmp_path / "archive.npz", f=good)
    with pytest.raises(SpeakerError, match="npz archive"):
        load_speaker(tmp_path / "archive.npz", tiny)
    (tmp_path / "text.npy").write_text("hello")
    with pytest.raises(SpeakerError, match="text.npy"):
        load_speaker(tmp_path / "text.npy", tiny)
    with pytest.raises(SpeakerError, match="nope.npy: no such file"):
        load_speaker(tmp_path / "nope.npy", tiny)
