"""vc.audio.check_audio at every entrance: dtypes, layouts, non-finite values; truncated files."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from helpers import speech

SR = 16000
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny(tiny6):
    return tiny6


# --- check_audio itself -----------------------------------------------------------------------------------
def test_integer_pcm_is_scaled_by_its_dtype_range():
    from vc.audio import check_audio

    np.testing.assert_array_equal(check_audio(np.array([-32768, 0, 16384], np.int16)), [-1.0, 0.0, 0.5])
    np.testing.assert_array_equal(check_audio(np.array([-2 ** 31, 2 ** 30], np.int32)), [-1.0, 0.5])
    np.testing.assert_array_equal(check_audio(np.array([0, 128, 192], np.uint8)), [-1.0, 0.0, 0.5])
    assert check_audio(np.array([0.25], np.float64)).dtype == np.float32


def test_layouts():
    from vc.audio import AudioError, check_audio

    stereo = np.stack([np.full(100, 0.2), np.full(100, 0.4)], axis=1)  # (n, 2)
    np.testing.assert_allclose(check_audio(stereo), np.full(100, 0.3), rtol=1e-6)
    assert check_audio(stereo, mono=False).shape == (100, 2)
    with pytest.raises(AudioError, match=r"looks like \(channels, samples\).*audio\.T"):
        check_audio(stereo.T)
    with pytest.raises(AudioError, match="not shape"):
        check_audio(np.zeros((2, 3, 100)))
    with pytest.raises(AudioError, match="not shape"):
        check_audio(np.float32(0.5))


@pytest.mark.parametrize("bad, message", [
    (np.array([0.0, np.nan]), "NaN or infinite"),
    (np.array([0.0, np.inf], np.float32), "NaN or infinite"),
    (np.array([True, False]), "not bool"),
    (np.array([1 + 1j]), "not complex"),
    (np.array(["a"]), "not <U1"),
])
def test_bad_values_and_types_are_one_line_errors(bad, message):
    from vc.audio import AudioError, check_audio

    with pytest.raises(AudioError, match=message) as info:
        check_audio(bad, name="clip")
    assert str(info.value).startswith("clip: ") and "\n" not in str(info.value)


# --- the entrances ------------------------------------------------------------------------------------------
def test_convert_refuses_channels_first_and_scales_int16(tiny):
    import vc
    from vc.audio import AudioError

    target = np.ones(6, np.float32)
    a = speech(0.6)
    with pytest.raises(AudioError, match="audio.T"):
        vc.convert(np.stack([a, a]), SR, target, tiny, n_iter=2)
    pcm = np.round(a * 32767).astype(np.int16)
    from_int = vc.convert(pcm, SR, target, tiny, n_iter=2)
    from_float = vc.convert(pcm / 32768.0, SR, target, tiny, n_iter=2)
    assert from_int.shape == (a.size,)
    np.testing.assert_allclose(from_int, from_float, atol=1e-5)
    stereo = vc.convert(np.stack([a, a], axis=1), SR, target, tiny, n_iter=2)
    np.testing.assert_allclose(stereo, vc.convert(a, SR, target, tiny, n_iter=2), atol=1e-5)
    for sr in (0, -16000, 16000.5, float("inf"), "16000"):
        with pytest.raises(ValueError, match="sr must be"):
            vc.convert(a, sr, target, tiny, n_iter=2)


def test_streaming_push_averages_channels_instead_of_flattening_them(tiny):
    from vc.engine import EngineError, StreamingConverter

    a = speech(0.5)
    mono = StreamingConverter(tiny, np.ones(6, np.float32), hop_ms=40, n_iter=2)
    stereo = StreamingConverter(tiny, np.ones(6, np.float32), hop_ms=40, n_iter=2)
    out = stereo.push(np.stack([a, a], axis=1))
    assert out.shape == (a.size,)
    np.testing.assert_allclose(out, mono.push(a), atol=1e-6)
    with pytest.raises(EngineError, match="audio.T"):
        stereo.push(np.stack([a, a]))
    with pytest.raises(EngineError, match="NaN"):
        stereo.push(np.array([0.0, np.nan], np.float32))


def _truncated_wav(path: Path, seconds: float = 3.0, keep_samples: int = 6) -> Path:
    sf.write(path, np.full(int(seconds * SR), 0.1, np.float32), SR, subtype="PCM_16")
    data = path.read_bytes()
    path.write_bytes(data[:44 + 2 * keep_samples])  # the header still promises `seconds`
    return path


def test_truncated_file_is_read_as_far_as_it_goes_with_a_warning(tmp_path):
    from vc.audio import TruncatedAudioWarning, read_audio

    wav = _truncated_wav(tmp_path / "cut.wav", keep_samples=4000)
    with pytest.warns(TruncatedAudioWarning, match=r"cut.wav: truncated: the header promises 48000 samples "
                                                   r"\(3.00 s\), the file holds 4000 \(0.25 s\)"):
        audio, sr = read_audio(wav)
    assert sr == SR and audio.shape == (4000,)
    flac = tmp_path / "cut.flac"
    sf.write(flac, speech(3.0), SR)
    flac.write_bytes(flac.read_bytes()[:flac.stat().st_size // 2])
    with pytest.warns(TruncatedAudioWarning, match="cut.flac: truncated: the header promises 48000 samples"):
        audio, _ = read_audio(flac)
    assert 0 < audio.size < 48000
    whole = tmp_path / "whole.wav"
    sf.write(whole, speech(0.5), SR)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_audio(whole)[0].shape == (SR // 2,)


def test_truncated_input_converts_what_is_there_and_says_so(tmp_path, tiny):
    from vc.audio import TruncatedAudioWarning
    from vc.conversion import convert_file

    wav = _truncated_wav(tmp_path / "cut.wav", keep_samples=8000)
    with pytest.warns(TruncatedAudioWarning, match="promises 48000 samples .* holds 8000"):
        seconds = convert_file(wav, tmp_path / "out.wav", np.ones(6, np.float32), tiny, n_iter=2)
    assert seconds == pytest.approx(0.5)
    assert sf.info(tmp_path / "out.wav").frames == 8000


def test_vc_enroll_says_a_file_is_truncated_in_one_line(tmp_path, tiny):
    wav = tmp_path / "voice.wav"
    sf.write(wav, speech(3.0), SR, subtype="PCM_16")
    wav.write_bytes(wav.read_bytes()[:44 + 2 * SR])  # 1 s of the promised 3
    done = subprocess.run([sys.executable, "-m", "vc.cli.enroll", str(wav), "-o", str(tmp_path / "s.npy"),
                           "--model", str(tiny.model_dir), "--device", "cpu"], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if "truncated" in line]
    assert len(lines) == 1 and lines[0].startswith("vc-enroll: warning: ") and "holds 16000" in lines[0], done.stderr
