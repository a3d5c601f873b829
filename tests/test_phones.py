"""The phone recogniser (training.phones) and what the runtime does with it (vc.phones, the "phones" match)."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from helpers import speech

torch = pytest.importorskip("torch")


def test_phone_texts_drop_stress_and_merge_repeats(tmp_path):
    from training.phones import PHONES, read_phone_texts

    path = tmp_path / "text-phone"
    path.write_text("u1.0\tW_B IY0_E\nu1.1\tIY1_B T_E\nu2.0\tT_B UW1_E\n")
    texts = read_phone_texts(path)
    assert [PHONES[i] for i in texts["u1"]] == ["SIL", "W", "IY", "T", "SIL"]   # IY IY across words: one
    assert [PHONES[i] for i in texts["u2"]] == ["SIL", "T", "UW", "SIL"]


@pytest.fixture(scope="module")
def phones_model(tiny_dir, tmp_path_factory):
    """The tiny DSAE with an (untrained) phone recogniser in its directory."""
    from training.phones import PhoneConfig, PhoneNet, write_phones
    from vc.model import load_model

    model_dir = tmp_path_factory.mktemp("phones") / "model"
    shutil.copytree(tiny_dir, model_dir)
    torch.manual_seed(0)
    write_phones(PhoneNet(PhoneConfig(channels=16, embedding=8)), model_dir)
    return load_model(model_dir, device="cpu", threads=1)


def test_keys_are_square_root_posteriors(phones_model):
    from vc.dsp import log_magnitude

    frames = log_magnitude(speech(1.0), cfg=phones_model.feature_config)
    keys = phones_model.phones.keys(frames)
    assert keys.shape == (frames.shape[0], phones_model.phones.n_phones)
    np.testing.assert_allclose(np.square(keys).sum(axis=1), 1.0, atol=1e-4)


def test_streamed_keys_match_the_file_away_from_each_hop_end(phones_model):
    from vc.dsp import log_magnitude
    from vc.phones import StreamingPhones

    recogniser = phones_model.phones
    frames = log_magnitude(speech(1.0, seed=2), cfg=phones_model.feature_config)
    whole = recogniser.keys(frames)
    stream = StreamingPhones(recogniser, float(np.log(phones_model.feature_config.log_floor)))
    hop = 20
    streamed = np.concatenate([stream.push(frames[i:i + hop]) for i in range(0, frames.shape[0] - hop + 1, hop)])
    settled = np.ones(streamed.shape[0], bool)
    for end in range(hop, streamed.shape[0] + 1, hop):
        settled[end - recogniser.right_context:end] = False
    settled[:recogniser.left_context] = False   # the file starts without a past
    assert np.abs(streamed[settled] - whole[:streamed.shape[0]][settled]).max() < 1e-4
    assert np.abs(streamed[~settled] - whole[:streamed.shape[0]][~settled]).max() > 1e-4

    # Held back as long as the right context reaches (as a cross-fade holds frames), they are the file's.
    delay = recogniser.right_context + 3
    late = StreamingPhones(recogniser, float(np.log(phones_model.feature_config.log_floor)), delay=delay)
    delayed = np.concatenate([late.push(frames[i:i + hop]) for i in range(0, frames.shape[0] - hop + 1, hop)])
    assert delayed.shape == streamed.shape
    compared = delayed[delay + recogniser.left_context:]
    np.testing.assert_allclose(compared, whole[recogniser.left_context:compared.shape[0] + recogniser.left_context],
                               atol=1e-4)


def test_enrolment_keeps_phone_keys_and_the_speaker_file_carries_them(phones_model, tmp_path):
    import soundfile as sf

    from vc.speakers import enroll, load_speaker, save_speaker

    path = tmp_path / "a.wav"
    sf.write(path, speech(3.0, f0=180.0), 16000)
    speaker = enroll([path], phones_model).speaker
    assert speaker.envelope_phones is not None
    assert speaker.envelope_phones.shape == (speaker.envelopes.shape[0], phones_model.phones.n_phones)
    save_speaker(tmp_path / "s.npy", speaker)
    loaded = load_speaker(tmp_path / "s.npy", phones_model)
    np.testing.assert_array_equal(loaded.envelope_phones, speaker.envelope_phones)


def test_phone_keys_of_another_width_are_refused(phones_model, tmp_path):
    import dataclasses

    import soundfile as sf

    from vc.speakers import SpeakerError, enroll, load_speaker, save_speaker

    path = tmp_path / "a.wav"
    sf.write(path, speech(3.0), 16000)
    speaker = enroll([path], phones_model).speaker
    wrong = dataclasses.replace(speaker, envelope_phones=speaker.envelope_phones[:, :5].copy())
    save_speaker(tmp_path / "s.npy", wrong)
    with pytest.raises(SpeakerError, match="envelope_phones has 5 values per row"):
        load_speaker(tmp_path / "s.npy", phones_model)


def test_matching_by_phones_changes_the_conversion_and_streams(phones_model, tmp_path):
    import soundfile as sf

    import vc
    from vc.engine import StreamingConverter
    from vc.speakers import enroll

    path = tmp_path / "t.wav"
    sf.write(path, speech(3.0, f0=220.0, formant=900.0, seed=4), 16000)
    target = enroll([path], phones_model).speaker
    audio = speech(2.0, f0=120.0, seed=5)
    by_phones = vc.convert(audio, 16000, target, phones_model, exemplar_match="phones")
    by_envelope = vc.convert(audio, 16000, target, phones_model, exemplar_match="envelope")
    assert np.all(np.isfinite(by_phones)) and by_phones.shape == audio.shape
    assert np.abs(by_phones - by_envelope).max() > 1e-3
    streamed = StreamingConverter(phones_model, target, exemplar_match="phones").convert(audio)
    assert streamed.shape == audio.shape and np.all(np.isfinite(streamed))


def test_phone_keys_become_the_dsaes_content_targets(tmp_path):
    """`python -m training.phones targets`: a cache beside the features whose content targets are the
    recogniser's keys, one row per frame, that the DSAE's dataset loads."""
    import json

    from training.data.content import load_content_targets
    from training.dataset import write_synthetic_cache
    from training.phones import PHONES, PhoneConfig, PhoneNet, write_content_targets

    features = write_synthetic_cache(tmp_path / "features")
    run = tmp_path / "run"
    run.mkdir()
    cfg = PhoneConfig(channels=16, embedding=8)
    torch.save({"model": PhoneNet(cfg).state_dict(), "config": json.dumps(cfg.__dict__)}, run / "checkpoint.pt")
    out = tmp_path / "with-phones"
    write_content_targets(features, out, run)
    for split in ("train", "dev"):
        n = np.load(features / split / "frames.npy", mmap_mode="r").shape[0]
        targets = load_content_targets(out, split, n)
        assert targets.shape == (n, len(PHONES)) and np.all(np.isfinite(targets))
    train = load_content_targets(out, "train", np.load(features / "train" / "frames.npy", mmap_mode="r").shape[0])
    assert np.abs(train.astype(np.float32).mean(axis=0)).max() < 0.05       # standardised on train


def test_ctc_training_steps_lower_the_loss():
    """A few steps on two utterances: the objective and its batching fit together and can be learnt."""
    from training.phones import PhoneConfig, PhoneNet, collate, loss_of

    rng = np.random.default_rng(0)
    examples = [(rng.normal(-4, 1, (60, 200)).astype(np.float32), np.array([0, 5, 9, 0])),
                (rng.normal(-4, 1, (50, 200)).astype(np.float32), np.array([0, 7, 0]))]
    torch.manual_seed(0)
    net = PhoneNet(PhoneConfig(channels=16, embedding=8))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    batch = collate(examples, [0, 1], None)
    first = loss_of(net, batch).item()
    for _ in range(30):
        loss = loss_of(net, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert np.isfinite(first) and loss.item() < 0.5 * first


def test_training_can_stop_part_way_through_its_schedule_and_resume(tmp_path, capsys):
    """--stop-after ends a run early on the schedule of --epochs (how the shipped model's judge was kept);
    the same command with a later stop carries on from the checkpoint."""
    from training.phones import main

    rng = np.random.default_rng(0)
    examples = [(rng.normal(-4, 1, (40 + 5 * i, 200)).astype(np.float32), np.array([0, 3 + i, 0])) for i in range(4)]
    cache = tmp_path / "cache"
    cache.mkdir()
    for split in ("train", "dev"):
        np.savez(cache / f"phones-{split}.npz", frames=np.concatenate([e[0] for e in examples]),
                 labels=np.concatenate([e[1] for e in examples]),
                 n_frames=np.array([e[0].shape[0] for e in examples]), n_labels=np.array([e[1].size for e in examples]))
    args = ["train", "--out", str(tmp_path / "run"), "--cache", str(cache), "--epochs", "4",
            "--frames-per-batch", "100", "--corpus", str(tmp_path / "unread"), "--text-phone", str(tmp_path / "unread")]
    epochs = []
    for stop in ("1", "2"):
        assert main(args + ["--stop-after", stop]) == 0
        epochs.append(torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["epoch"])
    assert epochs == [1, 2] and "resumed after epoch 1" in capsys.readouterr().out


def test_matching_by_phones_without_a_recogniser_or_keys_is_refused(tiny, phones_model, tmp_path):
    """Asked for by name, "phones" never falls back to another match unsaid."""
    import soundfile as sf

    import vc
    from vc.speakers import SpeakerError, enroll

    path = tmp_path / "t.wav"
    sf.write(path, speech(2.0, f0=200.0), 16000)
    audio = speech(1.0)
    with pytest.raises(SpeakerError, match="has no phones.onnx"):
        vc.convert(audio, 16000, enroll([path], tiny).speaker, tiny, exemplar_match="phones")
    without_keys = enroll([path], tiny).speaker      # enrolled with a model that has no recogniser
    with pytest.raises(SpeakerError, match="the target: .*no phone keys"):
        vc.convert(audio, 16000, without_keys, phones_model, exemplar_match="envelope+phones")
