"""vc.convert: overlap blending of the windows, whole-utterance round trips on a tiny model."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from helpers import speech

SR = 16000


@pytest.fixture(scope="module")
def tiny(tiny6):
    return tiny6


class IdentityModel:
    """Encoder/decoder pair that passes frames through z untouched, recording the f it was given."""

    def __init__(self, L=20, n_features=200):
        from vc.dsp import FeatureConfig

        self.segment_length, self.n_features, self.f_dim, self.z_dim = L, n_features, 3, n_features
        self.z_population = None
        self.phones = None
        self.feature_config = FeatureConfig()
        self.windows_seen = []

    def normalise(self, x):
        return np.asarray(x, np.float32) * 0.5

    def denormalise(self, x):
        return np.asarray(x, np.float32) * 2.0

    def encode(self, x):
        self.windows_seen.append(x.shape)
        b = x.shape[0]
        return np.zeros((b, 3), np.float32), np.zeros((b, 3), np.float32), x.copy(), np.zeros_like(x)

    def decode(self, f, z):
        assert f.shape == (z.shape[0], 3) and np.all(f == np.array([1, 2, 3], np.float32))
        return z


@pytest.mark.parametrize("T", [1, 7, 20, 21, 37, 100, 613])
@pytest.mark.parametrize("window_hop", [None, 5, 15, 20])
def test_blending_reproduces_frames_of_any_length(T, window_hop):
    from vc.conversion import reconstruct_features as convert_features

    rng = np.random.default_rng(T)
    frames = rng.standard_normal((T, 200)).astype(np.float32)
    model = IdentityModel()
    out = convert_features(frames, np.array([1, 2, 3], np.float32), model, window_hop=window_hop)
    assert out.shape == frames.shape
    np.testing.assert_allclose(out, frames, rtol=1e-5, atol=1e-5)
    # Every window the model sees is one full segment; by default windows overlap by half (hop 10).
    assert all(shape[1:] == (20, 200) for shape in model.windows_seen)
    n_windows = sum(shape[0] for shape in model.windows_seen)
    hop = window_hop or 10
    assert n_windows == (1 if T <= 20 else int(np.ceil((T - 20) / hop)) + 1)


def test_weights_cross_fade_to_one():
    from vc.stages import _window_weights

    for hop in (10, 15, 19):
        w = _window_weights(20, hop)
        assert np.all(w > 0) and np.all(w <= 1)
        overlap = 20 - hop
        np.testing.assert_allclose(w[hop:] + w[:overlap], 1.0, atol=1e-6)  # neighbours sum to one


def test_blending_crossfades_between_windows():
    """Windows that decode to different constants are blended smoothly, not switched at block edges."""
    from vc.conversion import reconstruct_features as convert_features

    class WindowIndexModel(IdentityModel):
        def decode(self, f, z):
            return np.broadcast_to(np.arange(z.shape[0], dtype=np.float32)[:, None, None], z.shape).copy()

    out = convert_features(np.zeros((60, 200), np.float32), np.array([1, 2, 3], np.float32), WindowIndexModel())
    track = out[:, 0] * 0.5  # undo denormalise's scale: the value is the window index
    assert track[0] == pytest.approx(0.0) and track[-1] == pytest.approx(4.0)
    assert np.all(np.diff(track) >= -1e-6)               # monotone ramp from window to window
    assert np.max(np.abs(np.diff(track))) < 0.2          # no jumps: about 1/10 per frame


def test_convert_round_trip_rates_channels_and_targets(tiny, tmp_path):
    import vc
    from vc.speakers import SpeakerError, save_speaker

    target = np.linspace(-1, 1, 6).astype(np.float32)
    audio = speech(1.3)
    out = vc.convert(audio, SR, target, tiny, n_iter=4)
    assert out.shape == audio.shape and out.dtype == np.float32
    assert np.all(np.isfinite(out)) and 0 < np.max(np.abs(out)) <= 0.99 + 1e-6

    # 44.1 kHz stereo in, 44.1 kHz mono out of the matching length; or any requested rate.
    import soxr

    hi = soxr.resample(audio, SR, 44100)
    stereo = np.stack([hi, 0.5 * hi], axis=1)
    out_hi = vc.convert(stereo, 44100, target, tiny, n_iter=4)
    assert abs(out_hi.shape[0] - hi.shape[0]) <= 2
    out_22 = vc.convert(stereo, 44100, target, tiny, n_iter=4, out_sr=22050)
    assert abs(out_22.shape[0] - audio.shape[0] * 22050 / SR) <= 3

    # A target from a file gives the same result as the array; a different target changes the output.
    save_speaker(tmp_path / "t.npy", target)
    np.testing.assert_allclose(vc.convert(audio, SR, str(tmp_path / "t.npy"), tiny, n_iter=4), out, atol=1e-5)
    other = vc.convert(audio, SR, -target, tiny, n_iter=4)
    assert np.max(np.abs(other - out)) > 1e-3

    with pytest.raises(SpeakerError, match="size 5 does not match the model's f_dim 6"):
        vc.convert(audio, SR, np.zeros(5, np.float32), tiny)
    with pytest.raises(ValueError, match="empty"):
        vc.convert(np.zeros(0, np.float32), SR, target, tiny)
    with pytest.raises(ValueError, match="NaN"):
        vc.convert(np.full(1000, np.nan, np.float32), SR, target, tiny)


def test_short_and_silent_inputs(tiny):
    from vc.conversion import convert

    target = np.zeros(6, np.float32)
    for n in (1, 100, 399, 400, 3201):
        out = convert(np.full(n, 0.01, np.float32), SR, target, tiny, n_iter=2)
        assert out.shape == (n,) and np.all(np.isfinite(out))
    assert np.all(np.isfinite(convert(np.zeros(SR, np.float32), SR, target, tiny, n_iter=2)))


def test_convert_file_writes_at_input_rate(tiny, tmp_path):
    import soundfile as sf

    from vc.conversion import convert_file

    sf.write(tmp_path / "in.flac", speech(0.7), 22050)
    seconds = convert_file(tmp_path / "in.flac", tmp_path / "out" / "in.wav", np.ones(6, np.float32), tiny, n_iter=2)
    info = sf.info(str(tmp_path / "out" / "in.wav"))
    assert info.samplerate == 22050 and info.channels == 1
    assert seconds == pytest.approx(info.duration, abs=1e-3)
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["in.wav"]  # no temporary file left


def test_demo_converts_examples_and_draws_figure(tiny, tmp_path, capsys):
    import json

    import soundfile as sf

    from vc.demo import main, run_demo
    from vc.speakers import save_speaker

    ex = tmp_path / "examples"
    (ex / "audio").mkdir(parents=True)
    (ex / "speakers").mkdir()
    sf.write(ex / "audio" / "s1-u1.flac", speech(0.8, f0=120), 16000)
    sf.write(ex / "audio" / "s2-u1.flac", speech(0.6, f0=200), 22050)
    sf.write(ex / "audio" / "t1-u1.flac", speech(0.6, f0=220), 16000)  # the target's own clip: not converted
    sf.write(ex / "speakers" / "t1.flac", speech(0.7, f0=220), 16000)
    save_speaker(ex / "speakers" / "t1.npy", np.ones(6, np.float32))
    manifest = {
        "default_target": "t1",
        "clips": [{"path": f"audio/{s}-u1.flac", "speaker": s, "text": "hello"} for s in ("s1", "s2", "t1")],
        "targets": [{"name": "t1", "speaker_id": "t1", "speaker": "speakers/t1.npy", "reference": "speakers/t1.flac"}],
    }
    (ex / "manifest.json").write_text(json.dumps(manifest))
    result = run_demo(tmp_path / "out", model_dir=tiny.model_dir, n_iter=2, device="cpu", examples=ex)
    names = sorted(p.name for p in (tmp_path / "out" / "converted").iterdir())
    assert names == ["s1-u1__to__t1.wav", "s2-u1__to__t1.wav"]
    assert sf.info(str(tmp_path / "out" / "converted" / names[0])).duration == pytest.approx(0.8, abs=0.01)
    figure = tmp_path / "out" / "spectrograms.png"
    assert result["figure"] == str(figure) and figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "2 clip(s)" in capsys.readouterr().out

    # A wrong target name or a missing model is one clear line and exit code 1.
    assert main(["--out", str(tmp_path / "o2"), "--model", str(tmp_path / "nomodel")]) == 1
    assert "nomodel: model directory not found" in capsys.readouterr().err


def test_whole_utterance_path_rebuilds_the_spectrum():
    """With a model that changes nothing, the converted audio has the input's magnitude spectrum:
    features, blending, DC restoration and Griffin-Lim (PGHI start) fit together, and more iterations help.
    (harmonics=False: rebuilt harmonics would replace the input's own fine structure.)"""
    from vc.conversion import convert_at_model_rate
    from vc.dsp import spectral_convergence_db, stft

    audio = speech(1.5, f0=130)
    mag = np.abs(stft(audio, n_fft=400, hop_length=160, win_length=400))
    target = np.array([1, 2, 3], np.float32)
    rough = convert_at_model_rate(audio, target, IdentityModel(), n_iter=0, harmonics=False, strength=1.0)
    fine = convert_at_model_rate(audio, target, IdentityModel(), n_iter=32, harmonics=False, strength=1.0)
    assert fine.shape == audio.shape
    sc_rough = spectral_convergence_db(mag, rough, hop_length=160)
    sc_fine = spectral_convergence_db(mag, fine, hop_length=160)
    assert sc_fine < -25 and sc_fine < sc_rough - 5, (sc_rough, sc_fine)


class CodeRecorder(IdentityModel):
    """Encodes every segment to the source code (1, 0, 0) and records the f the decoder is given."""

    def __init__(self):
        super().__init__()
        self.decoded_with = []

    def encode(self, x):
        f, f_logvar, z, z_logvar = super().encode(x)
        f[:, 0] = 1.0
        return f, f_logvar, z, z_logvar

    def decode(self, f, z):
        self.decoded_with.append(np.array(f[0]))
        return z


@pytest.mark.parametrize("strength", [0.0, 0.5, 1.0, 1.5, 3.0])
def test_strength_moves_the_code_from_the_source_to_the_target_and_past_it(strength):
    from vc.conversion import convert_at_model_rate

    model = CodeRecorder()
    source, target = np.array([1, 0, 0], np.float32), np.array([0, 2, 0], np.float32)
    convert_at_model_rate(speech(1.0), target, model, n_iter=0, harmonics=False, strength=strength)
    assert model.decoded_with
    for f in model.decoded_with:
        np.testing.assert_allclose(f, source + strength * (target - source), atol=1e-6)


def test_bad_strength_is_refused(tiny, tmp_path, capsys):
    from vc.cli.batch import main
    from vc.conversion import convert_at_model_rate

    for bad in (-0.1, 3.5, float("nan"), True):
        with pytest.raises(ValueError, match="strength must be a number from 0 to 3"):
            convert_at_model_rate(speech(0.5), np.zeros(6, np.float32), tiny, strength=bad)
    (tmp_path / "in").mkdir()
    sf.write(tmp_path / "in" / "a.wav", speech(0.5), SR)
    np.save(tmp_path / "t.npy", np.zeros(6, np.float32))
    code = main([str(tmp_path / "in"), str(tmp_path / "out"), "--target", str(tmp_path / "t.npy"),
                 "--model", str(tiny.model_dir), "--strength", "4"])
    err = capsys.readouterr().err
    assert code == 1 and "vc-batch: error: --strength must be a number from 0 to 3, not 4.0" in err
    assert not (tmp_path / "out").exists()


def test_convert_with_a_model_directory_loads_it_once(tiny, monkeypatch):
    import vc
    import vc.conversion as conversion

    calls = []
    real = conversion.load_model
    monkeypatch.setattr(conversion, "load_model", lambda *a, **k: calls.append(a) or real(*a, **k))
    monkeypatch.setattr(conversion, "_loaded_models", {})
    audio = speech(0.3)
    target = np.zeros(6, np.float32)
    a = vc.convert(audio, SR, target, str(tiny.model_dir), n_iter=1)
    monkeypatch.setenv("VC_MODEL", str(tiny.model_dir))
    b = vc.convert(audio, SR, target, n_iter=1)  # the default model, here the same directory
    np.testing.assert_allclose(a, b, atol=1e-5)
    assert len(calls) == 1


def test_make_examples_then_demo(tiny, tmp_path, capsys):
    """tools/make_examples.py on a small open-corpus layout, then the demo on what it wrote."""
    import csv
    import importlib.util
    import json
    from pathlib import Path

    import soundfile as sf

    corpus = tmp_path / "open-corpus"
    rows = []
    for k, (spk, gender, engine) in enumerate([("ea", "f", "espeak-ng"), ("eb", "m", "espeak-ng"),
                                              ("fa", "m", "flite"), ("fb", "f", "festival"), ("tr", "m", "flite")]):
        (corpus / spk).mkdir(parents=True)
        for u in range(3):
            rel = f"{spk}/u{u}.wav"
            sf.write(corpus / rel, speech(2.0 + 0.4 * u, f0=100 + 20 * k, seed=k * 10 + u), 16000)
            rows.append({"speaker": spk, "utterance": f"u{u}", "path": rel, "text": f"sentence {u}",
                         "engine": engine, "voice": f"v{k}", "gender": gender,
                         "split": "train" if spk == "tr" else "test"})
    with open(corpus / "metadata.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)

    repo = Path(__file__).resolve().parent.parent
    spec = importlib.util.spec_from_file_location("make_examples", repo / "tools" / "make_examples.py")
    make_examples = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_examples)
    ex = tmp_path / "examples"
    from vc.speakers import load_speaker

    alsa = tmp_path / "alsa"   # the alsa-utils channel-test voice: 48 kHz WAVs, some missing is fine
    alsa.mkdir()
    for name in ("Front_Left.wav", "Rear_Right.wav"):
        sf.write(alsa / name, speech(0.9, f0=140, sr=48000), 48000)
    human = tmp_path / "human"   # an assembled corpus (vc-corpus assemble's columns)
    rows_h = []
    for k, (spk, gender, age, source) in enumerate([("speechocean762-0001", "f", "9", "speechocean762"),
                                                    ("speechocean762-0002", "m", "35", "speechocean762"),
                                                    ("librispeech-1688", "m", "", "librispeech")]):
        for u in range(2):
            rel = f"audio/{spk}/u{u}.wav"
            (human / rel).parent.mkdir(parents=True, exist_ok=True)
            sf.write(human / rel, speech(1.5, f0=110 + 40 * k, seed=100 + k), 16000)
            rows_h.append({"speaker": spk, "utterance": f"u{u}", "path": rel, "text": "", "source": source,
                           "gender": gender, "split": "test", "age": age})
    with open(human / "metadata.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows_h[0]))
        writer.writeheader()
        writer.writerows(rows_h)
    assert make_examples.main(["--corpus", str(corpus), "--model", str(tiny.model_dir), "--out", str(ex),
                               "--sources", "2", "--targets", "2", "--human-corpus", str(human),
                               "--human-targets", "2", "--human-clip-dir", str(alsa)]) == 0
    manifest = json.loads((ex / "manifest.json").read_text())
    humans = [t for t in manifest["targets"] if t.get("human")]
    # two different people (sex first), their codes only, with the corpus licence for attribution
    assert len(humans) == 2 and {t["gender"] for t in humans} == {"f", "m"}
    assert all(t["reference"] is None and t["licence"] in ("Apache-2.0", "CC-BY-4.0") for t in humans)
    assert all(t["licence"] in (ex / "README.md").read_text() for t in humans)
    manifest["targets"] = [t for t in manifest["targets"] if not t.get("human")]
    speakers_used = {c["speaker"] for c in manifest["clips"]} | {t["speaker_id"] for t in manifest["targets"]}
    assert len(manifest["clips"]) == 2 and len(manifest["targets"]) == 2 and "tr" not in speakers_used
    assert {t["gender"] for t in manifest["targets"]} == {"f", "m"}  # diverse targets
    for t in manifest["targets"]:
        assert t["model_id"] == tiny.model_id and t["enrolled_files"] == 3
        speaker = load_speaker(ex / t["speaker"], tiny)
        assert speaker.f.shape == (6,) and speaker.register is not None   # the synthetic voices are voiced
    for c in manifest["clips"]:
        assert sf.info(str(ex / c["path"])).samplerate == 16000 and 2.0 <= c["seconds"] <= 3.6
    assert sorted(p.name for p in ex.iterdir()) == ["README.md", "audio", "manifest.json", "speakers"]
    assert not any(p.suffix != ".npy" for p in (ex / "speakers").iterdir() if "-" in p.stem)   # no human audio

    result = run_demo_quiet(tmp_path / "out", tiny, ex)
    # 2 clips to the default target, then the human voice (the two alsa files joined) to all 4 targets
    human_out = [p for p in result["converted"] if "alsa-channel-test__to__" in p]
    assert len(result["converted"]) == 2 + 4 and len(human_out) == 4
    assert sf.info(human_out[0]).duration == pytest.approx(0.9 + 0.25 + 0.9, abs=0.01)
    assert result["target"] == manifest["default_target"]
    assert (tmp_path / "out" / "spectrograms.png").is_file()


def run_demo_quiet(out, model, examples):
    from vc.demo import run_demo

    return run_demo(out, model_dir=model.model_dir, n_iter=2, device="cpu", examples=examples)


def test_code_statistics_estimate_and_move():
    from vc.z_statistics import CodeStats, RunningCodeStats, move_codes

    rng = np.random.default_rng(0)
    z = rng.normal(2.0, 3.0, (500, 4)).astype(np.float32)
    running = RunningCodeStats(4)
    assert running.estimate() is None
    for part in np.array_split(z, 7):
        running.update(part)
    stats = running.estimate()
    np.testing.assert_allclose(stats.mean, z.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(stats.std, z.std(axis=0), rtol=1e-5)
    target = CodeStats(np.array([0, 1, -1, 5], np.float32), np.array([1, 0.5, 2, 0.1], np.float32))
    # With no frames the estimate is the prior, so nothing moves; the prior's weight fades as frames come.
    empty = RunningCodeStats(4).estimate(prior=target)
    np.testing.assert_allclose(move_codes(z, empty, target), z, rtol=1e-5, atol=1e-5)
    shrunk = running.estimate(prior=target, prior_frames=500)
    np.testing.assert_allclose(shrunk.mean, (z.mean(axis=0) + target.mean) / 2, rtol=1e-4, atol=1e-5)
    moved = move_codes(z, stats, target)
    np.testing.assert_allclose(moved.mean(axis=0), target.mean, atol=1e-4)
    np.testing.assert_allclose(moved.std(axis=0), target.std, rtol=1e-4)
    np.testing.assert_allclose(move_codes(z, stats, target, 0.5), (z + moved) / 2, rtol=1e-5, atol=1e-5)
    assert move_codes(z, stats, None) is z and move_codes(z, stats, target, 0.0) is z


def test_file_path_moves_z_to_the_targets_statistics():
    """With z = the normalised frames, moving z's mean by d moves the log-magnitude by 2d (denormalise
    doubles), i.e. scales the output by exp(2d); the source's own statistics as the target's move nothing."""
    from vc.z_statistics import CodeStats
    from vc.conversion import convert_at_model_rate
    from vc.levels import speech_frame_flags
    from vc.stages import encode_windows
    from vc.z_statistics import RunningCodeStats
    from vc.dsp import log_magnitude
    from vc.speakers import Speaker

    model = IdentityModel()
    audio = speech(1.5, f0=130)
    frames = log_magnitude(audio, cfg=model.feature_config)
    running = RunningCodeStats(model.z_dim)
    running.update(encode_windows(frames, model).speech_z(speech_frame_flags(frames, model.feature_config)))
    own = running.estimate()
    f = np.array([1, 2, 3], np.float32)

    def convert(stats):
        # follow_level 0: the level is what this test reads the move by
        return convert_at_model_rate(audio, Speaker(f, None, stats), model, n_iter=0, harmonics=False, strength=1.0,
                                     follow_level=0.0)

    plain = convert(None)
    np.testing.assert_allclose(convert(own), plain, rtol=1e-3, atol=2e-5)   # float32 rounding only
    # (not exactly exp(2d): the log floor is taken off the magnitude before synthesis)
    louder = convert(CodeStats(own.mean + 0.25, own.std))
    assert np.sqrt(np.mean(louder ** 2) / np.mean(plain ** 2)) == pytest.approx(np.exp(0.5), rel=0.06)



def test_strength_zero_is_the_sources_own_voice_whatever_the_target(tiny, tmp_path):
    """At strength 0 nothing of the target is used (code, z statistics, envelopes, register, voiced
    frames): two very different targets give the same output, on the file path and in the engine, and it
    is the DSAE's reconstruction with the source's own code."""
    from vc.conversion import convert_at_model_rate
    from vc.engine import StreamingConverter
    from vc.speakers import enroll

    for name, f0, formant in (("low", 95.0, 500.0), ("high", 260.0, 900.0)):
        sf.write(tmp_path / f"{name}.wav", speech(2.0, f0=f0, formant=formant, seed=7), 16000)
    low = enroll([tmp_path / "low.wav"], tiny).speaker
    high = enroll([tmp_path / "high.wav"], tiny).speaker
    assert low.register is not None and high.register is not None and high.voiced is not None
    audio = speech(1.5, f0=150.0, formant=700.0, seed=2)
    a = convert_at_model_rate(audio, low, tiny, n_iter=4, strength=0.0)
    b = convert_at_model_rate(audio, high, tiny, n_iter=4, strength=0.0)
    np.testing.assert_array_equal(a, b)
    sf.write(tmp_path / "source.wav", audio, 16000)
    own_code = enroll([tmp_path / "source.wav"], tiny).speaker.f      # a bare code: nothing else to move
    np.testing.assert_allclose(convert_at_model_rate(audio, own_code, tiny, n_iter=4, strength=1.0), a, atol=1e-4)
    assert not np.allclose(convert_at_model_rate(audio, low, tiny, n_iter=4, strength=0.5),
                           convert_at_model_rate(audio, high, tiny, n_iter=4, strength=0.5), atol=1e-3)
    s_low = StreamingConverter(tiny, low, n_iter=4, strength=0.0).convert(audio)
    s_high = StreamingConverter(tiny, high, n_iter=4, strength=0.0).convert(audio)
    np.testing.assert_array_equal(s_low, s_high)
    # A microphone starts with silence: before the source has said anything the engine decodes with the
    # window's own code, not the target's, so the two targets still give the same stream.
    late = np.concatenate([np.zeros(8000, np.float32), audio])
    np.testing.assert_array_equal(StreamingConverter(tiny, low, n_iter=4, strength=0.0).convert(late),
                                  StreamingConverter(tiny, high, n_iter=4, strength=0.0).convert(late))
    assert not np.array_equal(StreamingConverter(tiny, low, n_iter=4, strength=0.5).convert(late),
                              StreamingConverter(tiny, high, n_iter=4, strength=0.5).convert(late))


def test_an_enrolled_source_is_used_by_the_file_path_too(tiny, tmp_path):
    """vc.convert(source=) takes the source's code, register and z statistics from its enrolment instead of
    measuring them on the clip, as the engine does; a path or a Speaker; a bad one names 'source'."""
    from vc.conversion import convert
    from vc.speakers import SpeakerError, enroll, load_speaker, save_speaker

    for name, f0, formant in (("target", 230.0, 900.0), ("other", 95.0, 450.0)):
        sf.write(tmp_path / f"{name}.wav", speech(2.0, f0=f0, formant=formant, seed=3), 16000)
    target = enroll([tmp_path / "target.wav"], tiny).speaker
    other = enroll([tmp_path / "other.wav"], tiny).speaker
    save_speaker(tmp_path / "other.npy", other)
    audio = speech(1.5, f0=150.0, formant=700.0, seed=4)
    measured = convert(audio, 16000, target, tiny, n_iter=4)
    told = convert(audio, 16000, target, tiny, n_iter=4, source=other)
    assert told.shape == measured.shape and not np.allclose(told, measured, atol=1e-3)
    np.testing.assert_array_equal(convert(audio, 16000, target, tiny, n_iter=4, source=tmp_path / "other.npy"),
                                  convert(audio, 16000, target, tiny, n_iter=4,
                                          source=load_speaker(tmp_path / "other.npy", tiny)))
    with pytest.raises(SpeakerError, match="source: size 3"):
        convert(audio, 16000, target, tiny, source=np.zeros(3, np.float32))


def test_conversion_settings_map_the_strength_to_every_stage_and_refuse_nonsense():
    from vc.settings import ConversionSettings

    def amounts(strength, **more):
        a = ConversionSettings(strength=strength, **{"envelope_share": 1.0, **more}).amounts
        return a.f, a.z, a.envelope, a.register, a.target_fine

    assert amounts(0.0) == (0.0, 0.0, 0.0, 0.0, 0.0)            # nothing of the target
    assert amounts(0.5) == (0.5, 0.5, 0.5, 0.5, 1.0)
    assert amounts(1.0) == (1.0, 1.0, 1.0, 1.0, 1.0)            # the plain swap, all the way
    assert amounts(2.0) == pytest.approx((2.0, 1.2, 1.2, 1.0, 1.0))    # past the target, pitch at the target's
    assert amounts(1.5, envelope_share=0.6)[2] == pytest.approx(0.66)  # the envelopes: their share of z's move
    assert amounts(1.0, fine_structure="source")[4] == 0.0      # the source's own excitation: none of the target's
    assert amounts(1.0, fine_structure="source", target_fine_share=0.5)[4] == 0.5
    assert amounts(0.0, fine_structure="source", target_fine_share=0.5)[4] == 0.0
    assert amounts(1.5, z_share=0.0)[:3] == pytest.approx((1.5, 0.0, 1.1))     # z's statistics stay; f and envelopes move
    assert amounts(2.0, z_share=0.5)[1] == pytest.approx(0.6)
    assert amounts(2.0, envelope_share=0.5, fine_structure="pulse")[2:] == pytest.approx((0.6, 1.0, 0.0))
    assert ConversionSettings.of(None, strength=None).strength == ConversionSettings().strength
    assert ConversionSettings.of(ConversionSettings(n_iter=8), strength=1.0) == ConversionSettings(n_iter=8, strength=1.0)
    with pytest.raises(TypeError, match="strenght"):
        ConversionSettings.of(strenght=1.0)
    for bad in ({"strength": 3.5}, {"strength": True}, {"fine_structure": "noise"}, {"exemplar_match": "pitch"},
                {"n_iter": -1}, {"n_iter": 2.5}, {"momentum": 1.0}, {"envelopes_per_frame": 0},
                {"target_fine_share": 1.5}, {"envelope_prediction": -0.1}, {"envelope_prediction": 1.2},
                {"z_share": -0.5}, {"z_share": 2.5}, {"pauses": "silence"}, {"fine_exemplars": 0},
                {"fine_exemplars": 40}, {"envelope_bins": 0}, {"envelope_bins": 26}, {"envelope_bins": 5.0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            ConversionSettings(**bad)


def test_converted_frames_follow_the_source_level():
    """follow_level 1 gives each converted frame its source frame's level (and keeps its shape); 0 leaves
    the frames alone; between, the level moves that share of the way in dB."""
    from vc.dsp import FeatureConfig
    from vc.levels import frame_level_db
    from vc.stages import follow_source_level

    cfg = FeatureConfig()
    rng = np.random.default_rng(0)
    source = rng.normal(-4.0, 1.0, (30, cfg.n_features)).astype(np.float32)
    source[:10] -= 5.0                                   # a quiet start, as before speech
    converted = rng.normal(-3.0, 1.5, (30, cfg.n_features)).astype(np.float32)
    followed = follow_source_level(converted, source, cfg)
    np.testing.assert_allclose(frame_level_db(followed, cfg), frame_level_db(source, cfg), atol=1e-3)
    shape = followed - converted                         # one gain per frame: the spectrum's shape is kept
    np.testing.assert_allclose(shape, np.repeat(shape[:, :1], cfg.n_features, axis=1), atol=1e-5)
    half = follow_source_level(converted, source, cfg, amount=0.5)
    np.testing.assert_allclose(frame_level_db(half, cfg),
                               0.5 * (frame_level_db(source, cfg) + frame_level_db(converted, cfg)), atol=1e-3)
    np.testing.assert_array_equal(follow_source_level(converted, source, cfg, amount=0.0), converted)


def test_source_detail_adds_back_what_the_decoder_misses_of_the_source(tiny):
    """source_detail d adds d x (the source's envelope - the decoder's envelope of it with the source's own
    code): the same frames whatever the target, and at strength 0 with d = 1 the source's own envelope."""
    from vc.dsp import log_magnitude
    from vc.levels import speech_frame_flags
    from vc.pitch import smooth_across_frequency
    from vc.settings import ConversionSettings
    from vc.source import SourceEstimate
    from vc.speakers import Speaker
    from vc.stages import convert_frames, encode_windows

    cfg = tiny.feature_config
    frames = log_magnitude(speech(1.5, f0=150.0, formant=700.0, seed=2), cfg=cfg)
    windows = encode_windows(frames, tiny)
    speech_flags = speech_frame_flags(frames, cfg)
    source = SourceEstimate(f_dim=tiny.f_dim, z_dim=tiny.z_dim)
    source.add_windows(windows.f_mean)
    rng = np.random.default_rng(0)

    def converted(target, strength, detail):
        settings = ConversionSettings(strength=strength, harmonics=False, follow_level=0.0, source_detail=detail)
        return convert_frames(windows.z_mean, windows, model=tiny, target=target, source=source,
                              settings=settings, speech=speech_flags, source_frames=frames)[0]

    targets = [Speaker(rng.standard_normal(tiny.f_dim).astype(np.float32)) for _ in range(2)]
    added = [converted(t, 1.5, 0.7) - converted(t, 1.5, 0.0) for t in targets]
    assert np.abs(added[0]).max() > 0.05
    np.testing.assert_allclose(added[0], added[1], atol=1e-4)
    own = converted(targets[0], 0.0, 1.0)
    np.testing.assert_allclose(own - converted(targets[0], 0.0, 0.0),
                               smooth_across_frequency(frames) - smooth_across_frequency(converted(targets[0], 0.0, 0.0)),
                               atol=1e-4)


def test_pauses_keep_the_source_frames_and_the_speech_is_converted_as_before(tiny):
    """pauses "source" gives every frame without speech the source's own raw frame (its room) and leaves the
    speech frames exactly as "converted" makes them; "converted" changes the pauses as well."""
    from vc.dsp import log_magnitude
    from vc.levels import speech_frame_flags
    from vc.settings import ConversionSettings
    from vc.source import SourceEstimate
    from vc.speakers import Speaker
    from vc.stages import convert_frames, encode_windows

    cfg = tiny.feature_config
    rng = np.random.default_rng(3)
    room = (3e-4 * rng.standard_normal(cfg.sr // 2)).astype(np.float32)       # about -70 dBFS
    audio = np.concatenate([room, speech(1.0, f0=140.0, seed=5), room])
    frames = log_magnitude(audio, cfg=cfg)
    flags = speech_frame_flags(frames, cfg)
    assert flags.sum() > 50 and (~flags).sum() > 50
    windows = encode_windows(frames, tiny)
    source = SourceEstimate(f_dim=tiny.f_dim, z_dim=tiny.z_dim)
    source.add_windows(windows.f_mean)
    target = Speaker(rng.standard_normal(tiny.f_dim).astype(np.float32))

    def converted(pauses):
        settings = ConversionSettings(strength=1.5, harmonics=False, pauses=pauses)
        return convert_frames(windows.z_mean, windows, model=tiny, target=target, source=source,
                              settings=settings, speech=flags, source_frames=frames)[0]

    kept, made = converted("source"), converted("converted")
    np.testing.assert_array_equal(kept[~flags], frames[~flags])
    np.testing.assert_array_equal(kept[flags], made[flags])
    assert np.abs(made[~flags] - frames[~flags]).mean() > 0.1


def test_formant_emphasis_raises_the_peaks_and_keeps_the_tilt():
    """formant_emphasis a moves each speech frame's envelope a further a x its distance from the tilt: a
    formant peak rises and the valley beside it falls, the frame's mean log level and the non-speech
    frames stay."""
    from vc.stages import emphasise_formants

    bins = np.arange(200)
    tilt = -0.01 * bins
    formants = 1.5 * np.exp(-0.5 * ((bins - 20) / 3.0) ** 2) + 1.0 * np.exp(-0.5 * ((bins - 60) / 4.0) ** 2)
    frames = np.tile((tilt + formants).astype(np.float32), (4, 1))
    speech_flags = np.array([True, True, False, True])
    out = emphasise_formants(frames, speech_flags, 0.5)
    np.testing.assert_array_equal(out[2], frames[2])
    assert out[0, 20] - frames[0, 20] > 0.15 and out[0, 60] - frames[0, 60] > 0.1  # the peaks rise
    assert out[0, 40] < frames[0, 40]                                              # the valley between falls
    assert abs(float(np.mean(out[0, 30:170] - frames[0, 30:170]))) < 0.05          # no level change
    twice = emphasise_formants(frames, speech_flags, 1.0)
    np.testing.assert_allclose(twice - frames, 2 * (out - frames), atol=1e-5)
    np.testing.assert_array_equal(emphasise_formants(frames, np.zeros(4, bool), 1.0), frames)
