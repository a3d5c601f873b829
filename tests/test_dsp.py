"""vc.dsp against librosa, reconstruction, Griffin-Lim quality, streaming, bad input, threads."""
import shutil
import subprocess
import threading

import librosa
import numpy as np
import pytest
import soundfile as sf
import soxr

from vc import dsp
from vc.dsp import FeatureConfig

from helpers import speech


@pytest.fixture(scope="module")
def espeak_speech(tmp_path_factory) -> np.ndarray:
    exe = shutil.which("espeak-ng")
    assert exe, "espeak-ng is needed for the Griffin-Lim tests (apt-get install espeak-ng)"
    wav = tmp_path_factory.mktemp("espeak") / "speech.wav"
    subprocess.run([exe, "-v", "en-us", "-s", "160", "-w", str(wav),
                    "The quick brown fox jumps over the lazy dog."], check=True, capture_output=True)
    y, sr = sf.read(wav, dtype="float32")
    return soxr.resample(y, sr, 16000).astype(np.float32)


def librosa_features(y, cfg=FeatureConfig()):
    S = librosa.stft(y, n_fft=cfg.n_fft, hop_length=cfg.hop_length, win_length=cfg.win_length,
                     window=cfg.window, center=cfg.center)
    return np.log(np.maximum(np.abs(S), cfg.log_floor))[int(cfg.drop_dc):].T


# --- FeatureConfig -------------------------------------------------------------------------------

def test_feature_config_defaults_and_round_trip():
    cfg = FeatureConfig()
    assert cfg.n_features == 200
    assert FeatureConfig(drop_dc=False).n_features == 201
    assert FeatureConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.to_dict() == {"sr": 16000, "n_fft": 400, "hop_length": 160, "win_length": 400,
                             "window": "hann", "center": True, "drop_dc": True, "log_floor": 1e-5}


def test_feature_config_hash_is_stable_and_distinguishes():
    # A literal: the hash is written into model files and caches, so it must not drift.
    assert FeatureConfig().hash() == "80a5430f09f9ebf3"
    assert FeatureConfig(hop_length=80).hash() != FeatureConfig().hash()


def test_feature_config_rejects_bad_dicts_and_values():
    d = FeatureConfig().to_dict()
    with pytest.raises(ValueError, match="unknown keys: colour"):
        FeatureConfig.from_dict({**d, "colour": 1})
    with pytest.raises(ValueError, match="lacks keys: sr"):
        FeatureConfig.from_dict({k: v for k, v in d.items() if k != "sr"})
    with pytest.raises(ValueError, match="win_length"):
        FeatureConfig(win_length=500)
    with pytest.raises(ValueError, match="log_floor"):
        FeatureConfig(log_floor=0.0)
    with pytest.raises(ValueError, match="window"):
        FeatureConfig(window="kaiser")


# --- STFT, ISTFT, features against librosa -------------------------------------------------------

@pytest.mark.parametrize("kwargs", [
    dict(n_fft=400, hop_length=160),
    dict(n_fft=400, hop_length=160, center=False),
    dict(n_fft=512, hop_length=128, win_length=300, window="hamming"),
    dict(n_fft=256, hop_length=64, window="blackman"),
])
def test_stft_matches_librosa(kwargs):
    y = speech(1.03)
    ours = dsp.stft(y, **kwargs)
    ref = librosa.stft(y, pad_mode="constant", **kwargs)
    assert ours.dtype == np.complex64 and ours.shape == ref.shape
    assert np.max(np.abs(ours - ref)) < 1e-5 * np.max(np.abs(ref))


def test_log_magnitude_matches_librosa():
    y = speech(2.0)
    ours = dsp.log_magnitude(y)
    ref = librosa_features(y)
    assert ours.dtype == np.float32 and ours.shape == (1 + y.size // 160, 200)
    # Where |S| is tiny its log is dominated by float32 rounding of the FFT; compare in magnitude there.
    assert np.allclose(np.exp(ours), np.exp(ref), rtol=1e-3, atol=1e-5 * np.exp(ref).max())
    loud = ref > ref.max() - 7
    assert np.max(np.abs(ours - ref)[loud]) < 2e-3


def test_features_round_trip_to_magnitude():
    cfg = FeatureConfig()
    y = speech(0.5)
    mag = dsp.magnitude_from_features(dsp.log_magnitude(y, cfg=cfg), cfg=cfg)
    S = np.abs(librosa.stft(y, n_fft=400, hop_length=160))
    assert mag.shape == S.shape and mag.dtype == np.float32
    assert np.allclose(mag[0], cfg.log_floor)
    assert np.allclose(mag[1:], np.maximum(S[1:], cfg.log_floor), rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("center", [True, False])
def test_istft_reconstructs_and_matches_librosa(center):
    y = speech(1.0, seed=3)
    S = dsp.stft(y, center=center)
    rebuilt = dsp.istft(S, center=center)
    ref = librosa.istft(S, hop_length=160, center=center)
    assert rebuilt.shape == ref.shape
    inner = slice(400, -400)  # librosa and we both divide by a near-zero window sum at the very ends
    assert np.max(np.abs(rebuilt - ref)[inner]) < 1e-5
    if center:
        exact = dsp.istft(S, length=y.size)
        assert exact.shape == y.shape and np.max(np.abs(exact - y)) < 1e-5


def test_float64_and_non_contiguous_input_accepted():
    y = speech(0.6)
    wide = np.repeat(y.astype(np.float64), 2)[::2]  # float64, stride 2
    assert not wide.flags.c_contiguous
    assert np.array_equal(dsp.log_magnitude(wide), dsp.log_magnitude(y))
    S = dsp.stft(y)
    assert np.allclose(dsp.istft(np.asfortranarray(S.astype(np.complex128))), dsp.istft(S), atol=1e-6)


# --- bad input ----------------------------------------------------------------------------------

@pytest.mark.parametrize("func", [dsp.stft, dsp.log_magnitude])
@pytest.mark.parametrize("bad, message", [
    (np.zeros(0, np.float32), "empty"),
    (np.zeros(399, np.float32), "shorter than one frame"),
    (np.zeros((2, 1600), np.float32), "1-D"),
    (np.r_[np.zeros(800), np.nan].astype(np.float32), "NaN or infinity"),
    (np.r_[np.zeros(800), np.inf], "NaN or infinity"),
    (np.zeros(800, np.complex64), "real signal"),
])
def test_signal_functions_reject_bad_input(func, bad, message):
    with pytest.raises(ValueError, match=message):
        func(bad)


def test_spectrogram_functions_reject_bad_input():
    S = dsp.stft(speech(0.3))
    with pytest.raises(ValueError, match="2-D"):
        dsp.istft(S[:, 0])
    with pytest.raises(ValueError, match="empty"):
        dsp.istft(S[:, :0])
    bad = S.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN or infinity"):
        dsp.istft(bad)
    with pytest.raises(ValueError, match="bins"):
        dsp.istft(S, n_fft=512)
    with pytest.raises(ValueError, match=r"shape \(frames, 200\)"):
        dsp.magnitude_from_features(np.zeros((4, 201)))
    with pytest.raises(ValueError, match="NaN"):
        dsp.magnitude_from_features(np.full((4, 200), np.nan))


# --- threads ------------------------------------------------------------------------------------

def run_in_threads(func, n_threads=4):
    results = [None] * n_threads
    barrier = threading.Barrier(n_threads)

    def work(i):
        barrier.wait()
        results[i] = func()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_threads_give_identical_features():
    y = speech(3.0, seed=7)
    expected = dsp.log_magnitude(y)
    # A transform size not used before makes the threads race to create its FFTW plans as well.
    fresh = dict(n_fft=378, hop_length=99)
    results = run_in_threads(lambda: (dsp.log_magnitude(y), dsp.stft(y, **fresh)))
    for features, spectrum in results:
        assert np.array_equal(features, expected)
        assert np.array_equal(spectrum, results[0][1])
    assert np.allclose(results[0][1], librosa.stft(y, **fresh), atol=1e-4)


# --- Griffin-Lim and PGHI -----------------------------------------------------------------------

def test_griffinlim_matches_librosa_from_the_same_phases():
    y = speech(0.5, seed=5)
    mag = np.abs(librosa.stft(y, n_fft=400, hop_length=160))
    # An int seed draws the same random phases as librosa's random_state.
    ours = dsp.griffinlim(mag, n_iter=16, momentum=0.99, seed=3, length=y.size)
    ref = librosa.griffinlim(mag, n_iter=16, momentum=0.99, hop_length=160, random_state=3, length=y.size)
    assert ours.shape == ref.shape == y.shape
    assert np.max(np.abs(ours - ref)) < 1e-4 * np.max(np.abs(ref))


def test_griffinlim_converges_on_speech_and_pghi_needs_fewer_iterations(espeak_speech):
    mag = np.abs(dsp.stft(espeak_speech))
    sc = lambda y: dsp.spectral_convergence_db(mag, y)  # noqa: E731
    random_32 = sc(dsp.griffinlim(mag, n_iter=32, seed=0))
    random_0 = sc(dsp.griffinlim(mag, n_iter=0, seed=0))
    pghi_0 = sc(dsp.griffinlim(mag, n_iter=0, init="pghi"))
    pghi_16 = sc(dsp.griffinlim(mag, n_iter=16, init="pghi"))
    pghi_32 = sc(dsp.griffinlim(mag, n_iter=32, init="pghi"))
    assert random_32 < -18 < random_0 + 12
    assert pghi_0 < random_0 - 5  # PGHI alone is already a usable phase
    assert pghi_16 < random_32  # half the iterations, better convergence
    assert pghi_32 < pghi_16


def test_griffinlim_from_features_resynthesises_speech(espeak_speech):
    cfg = FeatureConfig()
    mag = dsp.magnitude_from_features(dsp.log_magnitude(espeak_speech, cfg=cfg), cfg=cfg)
    y = dsp.griffinlim(mag, init="pghi", length=espeak_speech.size)
    assert y.shape == espeak_speech.shape and y.dtype == np.float32
    assert dsp.spectral_convergence_db(mag, y) < -20


def test_griffinlim_phase_array_init_and_float64():
    y = speech(0.4)
    S = dsp.stft(y)
    # The true phase is a fixed point: Griffin-Lim started there stays there.
    exact = dsp.griffinlim(np.abs(S).astype(np.float64), n_iter=4, init=S, length=y.size)
    assert np.max(np.abs(exact - y)) < 1e-4
    radians = dsp.griffinlim(np.abs(S), n_iter=0, init=np.angle(S), length=y.size)
    assert np.max(np.abs(radians - y)) < 1e-4


def test_pghi_recovers_the_phase_derivative_of_a_chirp():
    t = np.arange(16000) / 16000
    y = np.sin(2 * np.pi * (300 * t + 400 * t ** 2)).astype(np.float32)
    S = dsp.stft(y)
    phase = dsp.pghi(np.abs(S))
    assert phase.shape == S.shape and phase.dtype == np.float32
    # Compare phase advances frame to frame at each frame's loudest bin (the absolute phase is free).
    frames = np.arange(5, S.shape[1] - 5)
    peak = np.abs(S[:, frames]).argmax(axis=0)
    true_step = np.angle(S[peak, frames + 1] * np.conj(S[peak, frames]))
    ours_step = np.angle(np.exp(1j * (phase[peak, frames + 1] - phase[peak, frames])))
    error = np.abs(np.angle(np.exp(1j * (true_step - ours_step))))
    assert np.median(error) < 0.3


# --- streaming ----------------------------------------------------------------------------------

def test_streaming_log_magnitude_equals_whole_signal():
    y = speech(1.7, seed=9)
    cfg = FeatureConfig()
    stream = dsp.StreamingLogMagnitude(cfg)
    rng = np.random.default_rng(0)
    blocks, start = [], 0
    while start < y.size:
        size = int(rng.integers(0, 700))  # empty and sub-frame pushes included
        blocks.append(stream.push(y[start:start + size].astype(np.float64)))
        start += size
    first_frames = sum(len(b) for b in blocks)
    # Frame t needs samples up to t*hop + n_fft//2 - 1; flush() adds the end padding for the rest.
    assert first_frames == (y.size - cfg.n_fft // 2) // cfg.hop_length + 1
    blocks.append(stream.flush())
    assert np.array_equal(np.concatenate(blocks), dsp.log_magnitude(y, cfg=cfg))
    assert stream.samples_pushed == 0  # flush starts a new stream
    assert stream.latency_samples == 200


def push_all(stream, mag, sizes):
    out, start, i = [], 0, 0
    while start < mag.shape[1]:
        size = sizes[i % len(sizes)]
        out.append(stream.push(mag[:, start:start + size]))
        start += size
        i += 1
        assert sum(len(o) for o in out) == stream.final_samples_after(min(start, mag.shape[1]))
    out.append(stream.flush())
    return np.concatenate(out)


def test_streaming_griffinlim_is_within_1db_of_whole(espeak_speech):
    mag = np.abs(dsp.stft(espeak_speech))
    whole = dsp.griffinlim(mag, n_iter=32, init="pghi")
    stream = dsp.StreamingGriffinLim(n_iter=32, lookahead=3)
    streamed = push_all(stream, mag, sizes=[1, 5, 2, 20])
    assert streamed.shape == whole.shape
    whole_db = dsp.spectral_convergence_db(mag, whole)
    stream_db = dsp.spectral_convergence_db(mag, streamed)
    assert stream_db <= whole_db + 1.0
    assert stream.latency_samples == 3 * 160 + 200


def test_streaming_griffinlim_block_size_does_not_matter():
    mag = np.abs(dsp.stft(speech(0.5, seed=4)))
    one = push_all(dsp.StreamingGriffinLim(n_iter=8, lookahead=2), mag, sizes=[1])
    mixed = push_all(dsp.StreamingGriffinLim(n_iter=8, lookahead=2), mag, sizes=[7, 3])
    assert np.array_equal(one, mixed)
    lookahead_0 = dsp.StreamingGriffinLim(n_iter=8, lookahead=0)
    assert len(lookahead_0.push(mag[:, :3])) == 3 * 160 - 200


def test_streaming_rejects_bad_input():
    stream = dsp.StreamingGriffinLim()
    with pytest.raises(ValueError, match=r"shape \(201, frames\)"):
        stream.push(np.ones(201))
    with pytest.raises(ValueError, match="NaN or infinity"):
        stream.push(np.full((201, 2), np.inf))
    with pytest.raises(ValueError, match="negative value"):
        stream.push(-np.ones((201, 2)))
    with pytest.raises(ValueError, match="PGHI needs"):
        dsp.StreamingGriffinLim(window="boxcar")
    with pytest.raises(ValueError, match="NaN or infinity"):
        dsp.StreamingLogMagnitude().push(np.array([0.0, np.nan]))
    with pytest.raises(ValueError, match="1-D"):
        dsp.StreamingLogMagnitude().push(np.zeros((2, 2)))


def test_griffinlim_rejects_bad_input():
    mag = np.abs(dsp.stft(speech(0.3)))
    cases = [
        (dict(mag=mag[:, 0]), "2-D"),
        (dict(mag=mag[:, :0]), "empty"),
        (dict(mag=np.where(np.arange(mag.shape[1]) == 2, np.nan, mag)), "NaN or infinity"),
        (dict(mag=-mag), "negative value"),
        (dict(mag=mag, init="zeros"), "init must be"),
        (dict(mag=mag, init=np.zeros((201, 3))), "initial phase has shape"),
        (dict(mag=mag, length=100), "frames"),
        (dict(mag=mag, momentum=-0.5), "momentum"),
        (dict(mag=mag, n_iter=-1), "n_iter"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            dsp.griffinlim(**kwargs)


def test_threads_give_identical_griffinlim():
    mag = np.abs(dsp.stft(speech(1.0, seed=11)))
    expected = dsp.griffinlim(mag, n_iter=8, init="pghi")
    for result in run_in_threads(lambda: dsp.griffinlim(mag, n_iter=8, init="pghi")):
        assert np.array_equal(result, expected)


def test_threads_with_their_own_streams_give_identical_results():
    y = speech(0.8, seed=12)
    mag = np.abs(dsp.stft(y))

    def work():
        features = dsp.StreamingLogMagnitude()
        frames = np.concatenate([features.push(y[i:i + 321]) for i in range(0, y.size, 321)] + [features.flush()])
        return frames, push_all(dsp.StreamingGriffinLim(n_iter=8), mag, sizes=[3])

    expected_frames, expected_audio = work()
    for frames, audio in run_in_threads(work):
        assert np.array_equal(frames, expected_frames) and np.array_equal(audio, expected_audio)


# --- one rule per parameter, in the kernel; no NaN out of finite input -------------------------------------

def test_kernel_refuses_parameters_that_would_give_nan_audio():
    from vc import _dsp

    y = speech(0.3)
    S = dsp.stft(y)
    logmag = np.log(np.maximum(np.abs(S.T), 1e-30)).astype(np.float32)
    window = np.hanning(402)[1:-1].astype(np.float32)
    gamma = _dsp.pghi_gamma("hann", 400)
    with pytest.raises(ValueError, match="gamma must be a positive finite number"):
        _dsp.StreamingGriffinLim(window, 160, True, 8, 0.99, 3, float("inf"))
    with pytest.raises(ValueError, match="gamma must be a positive finite number"):
        _dsp.pghi(logmag, 400, 160, float("inf"))
    with pytest.raises(ValueError, match="n_fft must be even"):
        _dsp.pghi(logmag[:, :1], 0, 160, gamma)
    with pytest.raises(ValueError, match="momentum must be in"):
        _dsp.StreamingGriffinLim(window, 160, True, 8, float("nan"), 3, gamma)
    kernel = _dsp.StftKernel(window, 160, True)
    init = np.exp(1j * np.zeros(S.T.shape)).astype(np.complex64)
    init[3, 7] = np.nan
    with pytest.raises(ValueError, match="initial phase contains NaN"):
        kernel.griffinlim(np.abs(S.T), init, 4, 0.99)
    with pytest.raises(ValueError, match="n_fft must be even"):
        _dsp.StftKernel(np.zeros(0, np.float32), 160, True)
    with pytest.raises(ValueError, match="momentum must be in"):
        dsp.griffinlim(np.abs(S), momentum=1.5)
    with pytest.raises(ValueError, match="integer"):
        dsp.stft(y, n_fft=400.0)


@pytest.mark.parametrize("floor", [0.0, -1.0, float("nan"), float("inf"), 1e-40, 1e31])
def test_log_floor_is_refused_alike_on_every_path(floor):
    from vc import _dsp

    window = np.hanning(402)[1:-1].astype(np.float32)
    with pytest.raises(ValueError, match="log_floor must be a number from 1.2e-38 to 1e30"):
        FeatureConfig(log_floor=floor)
    with pytest.raises(ValueError, match="log_floor must be a number from 1.2e-38 to 1e30"):
        _dsp.StftKernel(window, 160, True).log_magnitude(speech(0.1), floor, 1)
    with pytest.raises(ValueError, match="log_floor must be a number from 1.2e-38 to 1e30"):
        _dsp.StreamingLogMagnitude(window, 160, True, floor, 1)


@pytest.mark.parametrize("floor", [1e-30, 1e-5, 1e25])
@pytest.mark.parametrize("scale", [1e-20, 1.0, 1e25])
def test_extreme_floors_and_levels_agree_whole_streaming_and_float64(floor, scale):
    cfg = FeatureConfig(log_floor=floor)
    y = speech(0.3) * np.float32(scale)
    whole = dsp.log_magnitude(y, cfg=cfg)
    stream = dsp.StreamingLogMagnitude(cfg)
    streamed = np.concatenate([stream.push(y[:1234]), stream.push(y[1234:]), stream.flush()])
    np.testing.assert_array_equal(streamed, whole)
    exact = np.log(np.maximum(np.abs(dsp.stft(y).astype(np.complex128)), floor))[1:].T
    np.testing.assert_allclose(whole, exact, atol=2e-4, rtol=1e-6)


def test_large_finite_spectrograms_are_transformed_and_beyond_1e30_refused():
    y = speech(0.3)
    S = dsp.stft(y)
    big = 1e25
    np.testing.assert_allclose(dsp.istft(S * big) / big, dsp.istft(S), atol=1e-6)
    mag = np.abs(S)
    out = dsp.griffinlim(mag * big, n_iter=8, init="pghi")
    # The same reconstruction, up to the sign phase retrieval cannot tell.
    reference = dsp.spectral_convergence_db(mag, dsp.griffinlim(mag, n_iter=8, init="pghi"))
    assert dsp.spectral_convergence_db(mag, out / big) == pytest.approx(reference, abs=0.5)
    stream = dsp.StreamingGriffinLim(n_iter=4)
    assert np.all(np.isfinite(np.concatenate([stream.push(mag * big), stream.flush()])))
    with pytest.raises(ValueError, match="beyond 1e30"):
        dsp.istft(S * 1e32)
    with pytest.raises(ValueError, match="beyond 1e30"):
        dsp.griffinlim(mag * 1e32)
    with pytest.raises(ValueError, match="beyond 1e30"):
        dsp.stft(y * np.float32(1e31))
    with pytest.raises(ValueError, match="above log"):
        dsp.magnitude_from_features(np.full((4, 200), 80.0))


@pytest.mark.parametrize("level", [0.0, 1e-38, 1e-12, 1.0, 1e28])
def test_no_public_function_returns_nan_on_finite_input(level):
    cfg = FeatureConfig()
    rng = np.random.default_rng(0)
    y = (level * rng.standard_normal(4000)).astype(np.float32)
    S = dsp.stft(y)
    mag = np.abs(S)
    outputs = [S, dsp.istft(S), dsp.log_magnitude(y, cfg=cfg), dsp.pghi(mag),
               dsp.griffinlim(mag, n_iter=3, seed=0), dsp.griffinlim(mag, n_iter=3, init="pghi"),
               dsp.griffinlim(mag, n_iter=3, init=S), dsp.griffinlim(mag, n_iter=3, init=None),
               dsp.magnitude_from_features(dsp.log_magnitude(y, cfg=cfg), cfg=cfg)]
    stream = dsp.StreamingGriffinLim(n_iter=3)
    outputs += [stream.push(mag), stream.flush()]
    features = dsp.StreamingLogMagnitude(cfg)
    outputs += [features.push(y), features.flush()]
    for out in outputs:
        assert np.all(np.isfinite(out))


def test_parameters_after_the_signal_are_keyword_only():
    y = speech(0.3)
    S = dsp.stft(y, n_fft=512, hop_length=128)
    assert S.shape == (257, 1 + y.size // 128)
    for call in (lambda: dsp.stft(y, 512), lambda: dsp.istft(S, 128), lambda: dsp.griffinlim(np.abs(S), 4),
                 lambda: dsp.pghi(np.abs(S), 128), lambda: dsp.log_magnitude(y, FeatureConfig()),
                 lambda: dsp.magnitude_from_features(np.zeros((3, 200)), FeatureConfig())):
        with pytest.raises(TypeError, match="positional argument"):
            call()
