"""StreamingConverter: block-size independence, measured latency, gate, pass-through, reset."""

import numpy as np
import pytest

from helpers import SR, speech, target_code, tiny_model_dir


@pytest.fixture(scope="module")
def random_model(tmp_path_factory):
    """A tiny DSAE with random weights: its output depends strongly on f."""
    from vc.model import load_model

    return load_model(tiny_model_dir(tmp_path_factory.mktemp("random-model"), f_dim=8, z_dim=6, seed=0)[0],
                      device="cpu", threads=1)


def push_in_blocks(engine, audio, sizes):
    out, i, k = [], 0, 0
    while i < audio.size:
        n = sizes[k % len(sizes)]
        block = engine.push(audio[i:i + n])
        assert block.shape == (min(n, audio.size - i),) and block.dtype == np.float32
        out.append(block)
        i += n
        k += 1
    return np.concatenate(out)


# --- tests ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode, fine_structure, source_detail", [("default", "target", 0.0), ("lowlat", "target", 0.0),
                                                                 ("lowlat", "source", 0.5),
                                                                 ("default", "source", 0.5)])
def test_output_does_not_depend_on_block_size(random_model, mode, fine_structure, source_detail):
    from vc.engine import engine_for_mode

    audio = speech(1.3)
    target = target_code(random_model)
    knobs = {"n_iter": 8, "fine_structure": fine_structure, "source_detail": source_detail}
    reference = push_in_blocks(engine_for_mode(random_model, target, mode, **knobs), audio, [160])
    assert np.sqrt(np.mean(reference ** 2)) > 1e-3, "the converted speech is silent"
    for sizes in ([1, 7, 1000], [3200], [4410, 17], [audio.size]):
        got = push_in_blocks(engine_for_mode(random_model, target, mode, **knobs), audio, sizes)
        np.testing.assert_allclose(got, reference, atol=2e-5, err_msg=f"block sizes {sizes}")


@pytest.mark.parametrize("hop_ms,lookahead_ms,harmonics,crossfade", [
    (100, 30, True, True), (40, 30, True, True), (190, 30, True, True), (200, 30, True, False), (40, 30, True, False),
    (20, 20, False, False), (60, 0, True, False), (200, 30, False, False)])
def test_algorithmic_latency_matches_the_delay_of_an_impulse(identity_model, hop_ms, lookahead_ms, harmonics,
                                                             crossfade):
    from vc.engine import StreamingConverter

    engine = StreamingConverter(identity_model, target_code(identity_model), hop_ms=hop_ms, crossfade=crossfade,
                                lookahead_ms=lookahead_ms, n_iter=16, gate_db=None, harmonics=harmonics)
    positions = [4000, 7123, 10311, 13999]  # different phases against the frame and hop grid
    x = np.zeros(SR + engine.latency_samples, np.float32)
    x[positions] = 0.5
    y = engine.push(x).astype(np.float64)
    # Griffin-Lim rebuilds a click from its magnitude alone, smeared over part of a window around the
    # original instant (symmetrically: the magnitudes are): the energy centre marks where it is.
    delays = []
    for p in positions:
        expected = p + engine.latency_samples
        around = np.arange(expected - 480, expected + 480)  # +-30 ms: a frame error would show
        energy = y[around] ** 2
        assert energy.sum() > 0.01 * 0.25, "the click did not come out near where it was expected"
        delays.append(np.sum(around * energy) / energy.sum() - p)
    measured_ms = float(np.mean(delays)) / SR * 1000
    assert abs(measured_ms - engine.algorithmic_latency_ms) < 2.0, (measured_ms, engine.algorithmic_latency_ms)
    # Nothing comes out before the latency has passed.
    assert np.max(np.abs(y[:positions[0] + engine.latency_samples - 480])) < 1e-3
    # The README's formula: hop + look-ahead + 14.9 ms, plus what two windows share with a cross-fade (the
    # 200 ms window less the hop), plus what of the pitch tracker's 12.6 ms the cross-fade does not cover
    # (YIN's 802-sample frame reaches 401 samples past its centre, the STFT's 200).
    crossfade_ms = 200 - hop_ms if crossfade else 0.0
    expected = (hop_ms + lookahead_ms + (400 - 160 - 1) / 16 + crossfade_ms
                + (max(0.0, 201 / 16 - crossfade_ms) if harmonics else 0.0))
    assert engine.algorithmic_latency_ms == pytest.approx(expected)


def test_identity_model_resynthesises_speech(identity_model):
    from vc.engine import StreamingConverter

    audio = speech(1.5)
    engine = StreamingConverter(identity_model, target_code(identity_model), hop_ms=40, n_iter=32, gate_db=None,
                                harmonics=False, strength=1.0)
    out = engine.convert(audio)
    assert out.shape == audio.shape
    # Same spectral envelope frame by frame (phases are rebuilt, so compare magnitudes).
    from vc.dsp import log_magnitude
    a, b = log_magnitude(audio), log_magnitude(out)
    loud = a.max(axis=1) > -2
    err = np.mean(np.abs(np.exp(a[loud]) - np.exp(b[loud]))) / np.mean(np.exp(a[loud]))
    assert err < 0.35, err


def test_noise_gate_silences_noise_and_passes_speech(random_model):
    from vc.engine import StreamingConverter

    rng = np.random.default_rng(3)
    noise = (10 ** (-70 / 20) * rng.standard_normal(SR)).astype(np.float32)
    voice = speech(1.0)
    audio = np.concatenate([noise, voice + noise, noise])
    # follow_level 0 and the pauses converted (the default): the model's own output, so that without the gate
    # the noise comes out loud
    made = dict(n_iter=4, follow_level=0.0, pauses="converted")
    gated = StreamingConverter(random_model, target_code(random_model), gate_db=-50, **made)
    open_ = StreamingConverter(random_model, target_code(random_model), gate_db=None, **made)
    out_gated, out_open = gated.convert(audio), open_.convert(audio)
    quiet = slice(int(0.3 * SR), int(0.7 * SR))
    assert np.sqrt(np.mean(out_open[quiet] ** 2)) > 1e-3, "without the gate the model converts the noise"
    # pauses "source": the input's own, its room at its level, not the model's output
    room = StreamingConverter(random_model, target_code(random_model), gate_db=None, n_iter=4,
                              follow_level=0.0, pauses="source").convert(audio)
    assert 0.5e-4 < np.sqrt(np.mean(room[quiet] ** 2)) < 1e-3
    assert np.max(np.abs(out_gated[quiet])) == 0.0
    loud = slice(SR + int(0.3 * SR), SR + int(0.7 * SR))
    np.testing.assert_allclose(out_gated[loud], out_open[loud], atol=1e-6)
    # No step at the gate's edges: the gain ramps, so neighbouring samples stay close.
    assert np.max(np.abs(np.diff(out_gated))) < 4 * np.max(np.abs(np.diff(out_open[loud])))


def test_passthrough_is_the_input_delayed_and_switches_without_a_step(random_model):
    from vc.engine import StreamingConverter

    audio = speech(1.0)
    engine = StreamingConverter(random_model, target_code(random_model), passthrough=True, n_iter=4)
    y = engine.push(audio)
    D = engine.latency_samples
    np.testing.assert_array_equal(y[D:], audio[:-D])
    assert not np.any(y[:D])
    engine.passthrough = False
    z = engine.push(audio)
    # Conversion ran underneath all along: after the crossfade the output is what a converting engine
    # gives, and during it a blend of the two without a step.
    converting = StreamingConverter(random_model, target_code(random_model), n_iter=4)
    converting.push(audio)
    wet = converting.push(audio)
    from vc.engine_output import CROSSFADE_MS
    fade = int(round(CROSSFADE_MS * SR / 1000))
    np.testing.assert_allclose(z[fade:], wet[fade:], atol=1e-6)
    dry = np.concatenate([audio[audio.size - D:], audio])[:fade + 1]
    bound = (np.max(np.abs(np.diff(wet[:fade + 1]))) + np.max(np.abs(np.diff(dry)))
             + np.max(np.abs(wet[:fade + 1] - dry)) / fade)
    assert np.max(np.abs(np.diff(z[:fade + 1]))) <= bound + 1e-6


def test_reset_starts_over(random_model):
    from vc.engine import StreamingConverter

    audio = speech(0.8)
    engine = StreamingConverter(random_model, target_code(random_model), hop_ms=40, n_iter=4)
    first = engine.push(audio)
    engine.push(speech(0.5, seed=5))
    engine.reset()
    np.testing.assert_array_equal(engine.push(audio), first)


def test_target_changes_the_output(random_model):
    from vc.engine import StreamingConverter

    audio = speech(1.0)
    a = StreamingConverter(random_model, target_code(random_model, 1), n_iter=4, gate_db=None).convert(audio)
    b = StreamingConverter(random_model, target_code(random_model, 2), n_iter=4, gate_db=None).convert(audio)
    assert np.sqrt(np.mean((a - b) ** 2)) > 0.2 * np.sqrt(np.mean(a ** 2))


def test_bad_settings_are_refused(random_model):
    from vc.engine import EngineError, StreamingConverter

    target = target_code(random_model)
    with pytest.raises(EngineError, match="multiple"):
        StreamingConverter(random_model, target, hop_ms=25)
    with pytest.raises(EngineError, match="longer than the model"):
        StreamingConverter(random_model, target, hop_ms=400)
    with pytest.raises(EngineError, match="size 3 does not match"):
        StreamingConverter(random_model, np.zeros(3, np.float32))
    engine = StreamingConverter(random_model, target)
    with pytest.raises(EngineError, match="NaN"):
        engine.push(np.array([0.0, np.nan], np.float32))


@pytest.mark.parametrize("fine_structure", ["target", "source"])
def test_harmonics_put_the_output_at_the_target_pitch(identity_model, fine_structure):
    """The engine rebuilds the harmonics at the source's contour moved to the target's register, as the
    file path does: the converted voice has a voiced F0 track, centred on the target's pitch (a pulse
    train's, the target having no voiced frames, or the source's own analysed again at that pitch)."""
    from vc.engine import StreamingConverter
    from vc.pitch import Register, yin
    from vc.speakers import Speaker

    audio = speech(3.0, f0=140.0)
    target = Speaker(target_code(identity_model), Register(np.log(230.0), 0.05))
    engine = StreamingConverter(identity_model, target, n_iter=16, gate_db=None, strength=1.0,
                                fine_structure=fine_structure)
    out = engine.convert(audio, block=3200)
    f0_in, voiced_in = yin(audio, SR, 160)
    f0_out, voiced_out = yin(out, SR, 160)
    late = np.arange(f0_in.size) > 100                     # after the first second: the register has settled
    assert voiced_in[late].mean() > 0.5
    assert (voiced_out[late] & voiced_in[late]).sum() > 0.8 * voiced_in[late].sum()
    assert np.median(f0_out[late & voiced_out]) == pytest.approx(230.0, rel=0.05)
    assert engine.source_register is not None
    assert np.exp(engine.source_register.log_mean) == pytest.approx(140.0, rel=0.05)
    assert engine.current_f0 == 0.0 or 150.0 < engine.current_f0 < 350.0
    # Without a register the source's own pitch is kept; without harmonics the pitch is gone.
    kept = StreamingConverter(identity_model, target.f, n_iter=16, gate_db=None).convert(audio, block=3200)
    f0_kept, voiced_kept = yin(kept, SR, 160)
    assert np.median(f0_kept[late & voiced_kept]) == pytest.approx(140.0, rel=0.05)
    plain = StreamingConverter(identity_model, target, n_iter=16, gate_db=None, harmonics=False)
    assert plain.pitch_latency_samples == 0 and plain.current_f0 == 0.0


def test_running_source_code_is_the_file_paths_after_the_whole_utterance(random_model):
    """strength uses f averaged over the speech so far, of the windows that are the file path's segments
    (every other window of the default engine), so at the end it is the code vc.convert uses, and reset()
    forgets it."""
    from vc.dsp import log_magnitude
    from vc.engine import StreamingConverter
    from vc.levels import speech_segment_flags
    from vc.stages import encode_windows, mixed_code

    audio = speech(2.0)
    target = target_code(random_model)
    engine = StreamingConverter(random_model, target, n_iter=2, strength=2.0)
    engine.push(audio)
    windows = encode_windows(log_magnitude(audio, cfg=random_model.feature_config), random_model)
    cfg = random_model.feature_config
    flags = speech_segment_flags(audio, segment_samples=random_model.segment_length * cfg.hop_length, n_fft=cfg.n_fft)
    assert flags.sum() >= 8
    n = engine.hops * engine.hop_frames // random_model.segment_length   # whole segments heard so far
    file_f = windows.speech_f(flags[:n]).astype(np.float64).mean(axis=0)
    np.testing.assert_allclose(mixed_code(engine._source.f, target, 2.0), mixed_code(file_f, target, 2.0), atol=1e-4)
    engine.reset()
    assert engine._source.f is None and engine.source_register is None
    with pytest.raises(Exception, match="strength"):
        StreamingConverter(random_model, target, strength=5.0)


def test_engine_moves_z_as_the_file_path_does(random_model):
    """The running statistics of the source's z end where the file path's whole-utterance ones are, and a
    target with z statistics changes the output (a bare code leaves z as encoded)."""
    from vc.z_statistics import CodeStats
    from vc.dsp import log_magnitude
    from vc.levels import speech_frame_flags
    from vc.stages import encode_windows
    from vc.z_statistics import RunningCodeStats
    from vc.engine import StreamingConverter
    from vc.speakers import Speaker

    audio = np.concatenate([speech(2.0), np.zeros(4000, np.float32), speech(1.0, f0=170, seed=2)])
    frames = log_magnitude(audio, cfg=random_model.feature_config)
    running = RunningCodeStats(random_model.z_dim)
    running.update(encode_windows(frames, random_model).speech_z(speech_frame_flags(frames, random_model.feature_config)))
    file_stats = running.estimate()
    f = target_code(random_model)
    moved = StreamingConverter(random_model, Speaker(f, None, CodeStats(file_stats.mean + 0.5, file_stats.std)),
                               n_iter=4)
    out = moved.convert(audio)
    stream_stats = moved._source._z.estimate()   # what was measured, before the prior is counted in
    assert np.all(np.abs(stream_stats.mean - file_stats.mean) < 0.25 * file_stats.std)
    np.testing.assert_allclose(stream_stats.std, file_stats.std, rtol=0.25)
    plain = StreamingConverter(random_model, Speaker(f), n_iter=4)
    unmoved = plain.convert(audio)
    assert unmoved.shape == out.shape
    assert not np.allclose(unmoved, out, atol=1e-3)


def test_an_enrolled_source_is_used_from_the_first_word(random_model, tmp_path):
    """With source= the engine takes the enrolled speaker's code, register and z statistics instead of
    estimating them as they speak: it converts as it would once the estimates had settled on those
    values, from the first hop on; a source file without z statistics leaves them to the running
    estimate; a bad source is an EngineError."""
    import soundfile as sf

    from vc.z_statistics import CodeStats
    from vc.engine import EngineError, StreamingConverter
    from vc.pitch import Register
    from vc.speakers import Speaker, enroll

    sf.write(tmp_path / "me.wav", speech(3.0, f0=130.0, seed=5), SR)
    me = enroll([tmp_path / "me.wav"], random_model).speaker
    f = target_code(random_model)
    target = Speaker(f, Register(np.log(220.0), 0.05), CodeStats(me.z_stats.mean + 0.3, me.z_stats.std))
    audio = speech(1.0, f0=130.0, seed=6)
    engine = StreamingConverter(random_model, target, n_iter=4, strength=2.0, source=me)
    assert engine.source_register == me.register and engine.source_code_stats is me.z_stats
    assert "source enrolled" in engine.describe()
    engine.push(audio[:3200])                                # one hop: nothing estimated yet
    np.testing.assert_array_equal(engine._source.f, me.f)
    assert engine.source_code_stats is me.z_stats
    known = engine.convert(audio)
    learnt = StreamingConverter(random_model, target, n_iter=4, strength=2.0).convert(audio)
    assert known.shape == learnt.shape and not np.allclose(known, learnt, atol=1e-3)
    engine.reset()
    assert engine.source_register == me.register               # reset keeps who is speaking
    partial = StreamingConverter(random_model, target, n_iter=4, source=Speaker(me.f, me.register))
    partial.convert(audio)
    assert partial.source_code_stats is not None               # z statistics still learnt
    with pytest.raises(EngineError, match="source: size 3"):
        StreamingConverter(random_model, target, source=Speaker(np.zeros(3, np.float32)))
    with pytest.raises(EngineError, match="enrolled speaker"):
        StreamingConverter(random_model, target, source=me.f)


def test_stream_windows_are_cross_faded_as_the_file_paths():
    """The default engine's windows (every half segment, the first half of the first one padding) give each
    frame the blend of the same windows, with the same weights, as the file path's; with a hop of a whole
    segment each frame is its window's own value."""
    from vc.stages import BlendedFrames, EncodedWindows

    L, hop, T = 20, 10, 90
    rng = np.random.default_rng(0)
    stream_starts = np.arange(hop - L, T - L + 1, hop)     # windows ending at hop, 2 hop, ..., T
    values = rng.standard_normal((stream_starts.size, L, 3)).astype(np.float32)  # differ window by window
    blended = BlendedFrames(L, hop)
    out = np.concatenate([blended.next_window(None).per_frame(v[None]) for v in values])
    assert out.shape == (T, 3)       # frames -(L - hop) to T - (L - hop) - 1: the newest L - hop are still open
    file_windows = EncodedWindows(starts=stream_starts[1:], f_mean=None, z_mean=None, hop=hop, n_frames=T, length=L)
    file_frames = file_windows.blend(iter([values[1:]]))
    # frames 0..hop-1 are in one more window in the stream (the one that starts in the padding)
    start = L - hop
    np.testing.assert_allclose(out[start + hop:], file_frames[hop:T - (L - hop)], atol=1e-6)
    assert not np.allclose(out[start:start + hop], values[1, :hop], atol=1e-3)

    whole = BlendedFrames(L, L)
    for v in values[:3]:
        np.testing.assert_array_equal(whole.next_window(None).per_frame(v[None]), v)


@pytest.mark.parametrize("mode", ["default", "lowlat"])
def test_cross_faded_stream_converts_with_the_whole_files_pitch(identity_model, mode):
    """A cross-fade holds each frame 100 ms after its hop, time enough for the tracker to see as far ahead
    as the whole-file tracker does: the default engine converts with exactly the file's F0 and voicing
    (the loudness floor aside, which a steady voice does not reach); the low-latency engine decides each
    hop's newest frames without their future."""
    from vc.engine import engine_for_mode
    from vc.pitch import yin

    audio = speech(2.0, f0=150.0, seed=4)
    engine = engine_for_mode(identity_model, target_code(identity_model), mode, n_iter=4, gate_db=None)
    taken = []
    take = engine._take_pitch
    engine._take_pitch = lambda h, padding: taken.append(take(h, padding)[0][padding:]) or (
        np.zeros(h), np.zeros(h, bool))
    engine.convert(audio, block=1000)
    f0 = np.concatenate(taken)
    whole_f0, whole_voiced = yin(audio, SR, 160)
    n = min(f0.size, whole_f0.size - 8)
    assert n > 150
    if mode == "default":
        assert engine.pitch_lookahead_frames == 4 and engine.pitch_latency_samples == 0
        np.testing.assert_array_equal(f0[:n] > 0, whole_voiced[:n])
        np.testing.assert_allclose(f0[:n], whole_f0[:n], rtol=1e-9)
    else:
        assert engine.pitch_lookahead_frames == 0 and engine.pitch_latency_samples == 201


def test_a_streams_first_seconds_move_z_less_than_their_own_statistics_say(random_model):
    """The engine counts the source's z with STREAM_PRIOR_FRAMES at the population's statistics: after half a
    second of speech its estimate lies between what those frames measure and the population's, nearer the
    population's than a file's count (PRIOR_FRAMES) would put it."""
    from vc.engine import StreamingConverter
    from vc.speakers import Speaker
    from vc.z_statistics import PRIOR_FRAMES, STREAM_PRIOR_FRAMES, CodeStats

    assert STREAM_PRIOR_FRAMES > PRIOR_FRAMES
    z_dim = random_model.z_dim
    # the target's statistics: the prior when the model file carries none of the training speakers'
    target_stats = CodeStats(np.full(z_dim, 3.0, np.float32), np.ones(z_dim, np.float32))
    engine = StreamingConverter(random_model, Speaker(target_code(random_model), None, target_stats), n_iter=2)
    engine.convert(speech(0.5, seed=4))
    source = engine._source
    measured = source._z.estimate()
    assert source._z.frames > 0
    stream = source._z.estimate(source.prior, STREAM_PRIOR_FRAMES)
    file_like = source._z.estimate(source.prior, PRIOR_FRAMES)
    np.testing.assert_allclose(source.z_stats.mean, stream.mean, atol=1e-6)
    gap = np.abs(source.prior.mean - measured.mean)
    assert np.all(np.abs(source.prior.mean - stream.mean) < np.abs(source.prior.mean - file_like.mean) + 1e-6)
    assert np.all(np.abs(source.prior.mean - stream.mean) < gap + 1e-6)


def test_z_share_zero_leaves_z_statistics_where_they_are(random_model):
    """z_share 0 converts as if the target had no z statistics (z keeps the source's), while f and the rest
    still move; the default share moves them and changes the output."""
    from vc.engine import StreamingConverter
    from vc.pitch import Register
    from vc.speakers import Speaker
    from vc.z_statistics import CodeStats

    f = target_code(random_model)
    z_dim = random_model.z_dim
    stats = CodeStats(np.full(z_dim, 0.8, np.float32), np.full(z_dim, 2.0, np.float32))
    with_stats = Speaker(f, Register(np.log(220.0), 0.05), stats)
    without = Speaker(f, Register(np.log(220.0), 0.05))
    audio = speech(1.0, f0=130.0, seed=6)

    def converted(target, **settings):
        return StreamingConverter(random_model, target, n_iter=4, strength=1.5, **settings).convert(audio)

    kept = converted(with_stats, z_share=0.0)
    np.testing.assert_allclose(kept, converted(without), atol=1e-6)
    assert not np.allclose(converted(with_stats), kept, atol=1e-3)
