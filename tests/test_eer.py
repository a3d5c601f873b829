"""Speaker-verification metrics, trials, embeddings and the vc-eer driver."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from scipy.stats import norm

from helpers import SR, export_graphs, make_metadata, speech
from training.cli.eer import main as eer_main
from training.eer import (
    EvaluationError,
    IVectorOptions,
    all_pairs_trials,
    cosine_scores,
    equal_error_rate,
    evaluate,
    format_table,
    min_dcf,
    model_embeddings,
    operating_points,
    read_trial_list,
    segment_starts,
)


# ------------------------------------------------------------------------------------------ metrics


def test_perfectly_separated_scores_give_zero_eer_and_zero_min_dcf():
    target, nontarget = np.array([2.0, 3.0, 5.0]), np.array([-1.0, 0.0, 1.0, 1.5])
    eer, threshold = equal_error_rate(target, nontarget)
    assert eer == 0.0
    assert 1.5 <= threshold <= 2.0
    assert min_dcf(target, nontarget)[0] == 0.0


def test_reversed_scores_give_full_error():
    eer, _ = equal_error_rate(np.array([0.0, 1.0]), np.array([2.0, 3.0]))
    assert eer == pytest.approx(1.0)


def test_identical_distributions_give_half():
    rng = np.random.default_rng(0)
    eer, _ = equal_error_rate(rng.standard_normal(20000), rng.standard_normal(20000))
    assert eer == pytest.approx(0.5, abs=0.01)
    # Fully tied scores: one diagonal ROC segment from (fa 1, miss 0) to (0, 1), crossing at 0.5 exactly.
    assert equal_error_rate(np.ones(5), np.ones(7))[0] == pytest.approx(0.5)


def test_eer_interpolates_between_operating_points_by_hand():
    # Operating points (p_fa, p_miss) of "accept if score >= t" at t = 0, 1, 3, +inf:
    # (1, 0), (0.5, 0), (0, 0.5), (0, 1). The tie at 1 (one target, one non-target) makes the step from
    # t = 1 to t = 3 diagonal; p_miss = p_fa at its middle: EER 0.25, threshold midway, 2.
    target, nontarget = np.array([1.0, 3.0]), np.array([0.0, 1.0])
    p_fa, p_miss, thresholds = operating_points(target, nontarget)
    np.testing.assert_allclose(p_fa, [1.0, 0.5, 0.0, 0.0])
    np.testing.assert_allclose(p_miss, [0.0, 0.0, 0.5, 1.0])
    np.testing.assert_allclose(thresholds, [0.0, 1.0, 3.0, np.inf])
    eer, threshold = equal_error_rate(target, nontarget)
    assert eer == pytest.approx(0.25)
    assert threshold == pytest.approx(2.0)


def test_eer_on_a_vertical_roc_segment():
    # Operating points (p_fa, p_miss) at thresholds 1..7: (1, 0) (2/3, 0) (2/3, 1/4) (1/3, 1/4) (1/3, 2/4)
    # (0, 2/4) (0, 3/4), then (0, 1). p_miss - p_fa turns positive between t=4 (-1/12) and t=5 (+1/6),
    # where p_fa stays at 1/3 while p_miss rises from 1/4 to 2/4: the EER is 1/3, reached a third of
    # the way along (1/12 of 1/4), so the threshold is 4 + 1/3.
    target = np.array([2.0, 4.0, 6.0, 7.0])
    nontarget = np.array([1.0, 3.0, 5.0])
    eer, threshold = equal_error_rate(target, nontarget)
    assert eer == pytest.approx(1 / 3)
    assert threshold == pytest.approx(4.0 + 1 / 3)


def test_eer_matches_the_gaussian_closed_form():
    # Target ~ N(d, 1), non-target ~ N(0, 1): the EER is Phi(-d / 2).
    rng = np.random.default_rng(1)
    d = 2.0
    eer, threshold = equal_error_rate(d + rng.standard_normal(200000), rng.standard_normal(200000))
    assert eer == pytest.approx(norm.cdf(-d / 2), abs=0.003)
    assert threshold == pytest.approx(d / 2, abs=0.02)


def test_eer_is_invariant_to_monotone_score_transforms():
    rng = np.random.default_rng(2)
    target, nontarget = rng.normal(1, 1, 500), rng.normal(0, 1, 700)
    assert equal_error_rate(np.exp(target), np.exp(nontarget))[0] == pytest.approx(
        equal_error_rate(target, nontarget)[0]
    )


def test_min_dcf_by_hand():
    # Two operating points inside: accept all (cost 0.99 * 1 -> normalised 99), reject all (1.0),
    # threshold 1: p_miss 0.5, p_fa 0 -> 0.01 * 0.5 / 0.01 = 0.5 (the minimum).
    target, nontarget = np.array([0.0, 2.0]), np.array([1.0])
    value, threshold = min_dcf(target, nontarget, p_target=0.01)
    assert value == pytest.approx(0.5)
    assert threshold == 2.0
    # With p_target 0.5 the cost weighs both errors equally: best is p_miss 0.5, p_fa 0 -> 0.5.
    assert min_dcf(target, nontarget, p_target=0.5)[0] == pytest.approx(0.5)
    # Scores that carry no information: no threshold beats the better trivial system (always reject).
    assert min_dcf(np.zeros(100), np.zeros(100))[0] == pytest.approx(1.0)


def test_metrics_reject_one_sided_or_non_finite_scores():
    with pytest.raises(EvaluationError, match="non-target"):
        equal_error_rate(np.array([1.0]), np.array([]))
    with pytest.raises(EvaluationError, match="NaN"):
        min_dcf(np.array([1.0, np.nan]), np.array([0.0]))
    with pytest.raises(EvaluationError, match="p_target"):
        min_dcf(np.array([1.0]), np.array([0.0]), p_target=1.5)


# ------------------------------------------------------------------------------------------- trials


def test_all_pairs_trials_and_cosine_scores():
    first, second, is_target = all_pairs_trials(["a", "a", "b", "b", "b"])
    assert len(first) == 10
    assert is_target.sum() == 1 + 3
    assert np.all(first < second)
    vectors = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 3.0], [1.0, 1.0]])
    np.testing.assert_allclose(
        cosine_scores(vectors, np.array([0, 0, 0]), np.array([1, 2, 3])), [1.0, 0.0, np.sqrt(0.5)]
    )


def test_trial_list_formats(tmp_path):
    keys = {"u1": 0, "u2": 1, "u3": 2, "s/u4": -1}
    speakers = ["a", "a", "b"]
    trials = tmp_path / "trials.txt"
    trials.write_text(
        "# comment line\n"
        "u1 u2 nontarget\n"  # an explicit label wins over the speakers
        "1 u1 u3\n"
        "u2 u3\n"  # no label: from the speakers
        "u1 s/u4 target\n"  # names a skipped utterance: dropped and counted
    )
    first, second, is_target, dropped = read_trial_list(trials, keys, speakers)
    np.testing.assert_array_equal(first, [0, 0, 1])
    np.testing.assert_array_equal(second, [1, 2, 2])
    np.testing.assert_array_equal(is_target, [False, True, False])
    assert dropped == 1

    trials.write_text("u1 nobody target\n")
    with pytest.raises(EvaluationError, match=r"trials.txt:1: unknown utterance 'nobody'"):
        read_trial_list(trials, keys, speakers)
    trials.write_text("u1 u2 u3 u1\n")
    with pytest.raises(EvaluationError, match="expected"):
        read_trial_list(trials, keys, speakers)


def test_segment_starts_cover_the_utterance():
    np.testing.assert_array_equal(segment_starts(19, 20), [])
    np.testing.assert_array_equal(segment_starts(20, 20), [0])
    np.testing.assert_array_equal(segment_starts(45, 20), [0, 20, 25])
    np.testing.assert_array_equal(segment_starts(60, 20, hop=10), [0, 10, 20, 30, 40])


# -------------------------------------------------------------------------------------- tiny model


def _write_tiny_model(model_dir: Path, f_dim: int = 6, z_dim: int = 3, seed: int = 0):
    """A linear "DSAE", written by the real exporter.

    f_mean = W^T (time mean of x), f_logvar = log(0.25) everywhere, z_mean(t) = V^T (x_t - time mean):
    f then captures the average spectrum (the voice), z only deviations from it.
    """
    import torch

    generator = torch.Generator().manual_seed(seed)
    w = torch.randn(200, f_dim, generator=generator) / 10
    v = torch.randn(200, z_dim, generator=generator) / 10

    class Encoder(torch.nn.Module):
        def forward(self, x):
            centre = x.mean(dim=1)
            f_mean = centre @ w
            z_mean = (x - centre[:, None, :]) @ v
            return f_mean, torch.full_like(f_mean, float(np.log(0.25))), z_mean, torch.zeros_like(z_mean)

    class Decoder(torch.nn.Module):
        def forward(self, f, z):
            return (f @ w.T)[:, None, :] + z @ v.T

    meta = make_metadata(200, f_dim=f_dim, z_dim=z_dim, hidden_dim=8, model_id="tiny-linear", corpus="synthetic",
                         norm_mean=np.full(200, -5.0), norm_std=np.full(200, 2.0))
    export_graphs(Encoder(), Decoder(), model_dir, meta)
    return w.numpy().astype(np.float64), v.numpy().astype(np.float64)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("model")
    w, v = _write_tiny_model(model_dir)
    return model_dir, w, v


def test_model_embeddings_average_segment_posteriors(tiny_model):
    from vc.model import load_model

    model_dir, w, v = tiny_model
    model = load_model(model_dir, device="cpu")
    rng = np.random.default_rng(4)
    utterances = [rng.normal(-5, 2, (45, 200)).astype(np.float32), rng.normal(-5, 2, (20, 200)).astype(np.float32)]
    f, z = model_embeddings(model, utterances, batch_segments=2)  # batches straddle utterances
    assert f.shape == (2, 6) and z.shape == (2, 3)
    for index, frames in enumerate(utterances):
        normalised = (frames.astype(np.float64) + 5.0) / 2.0
        starts = segment_starts(len(frames), 20)
        segment_f = [normalised[s : s + 20].mean(axis=0) @ w for s in starts]
        segment_z = [((normalised[s : s + 20] - normalised[s : s + 20].mean(axis=0)) @ v).mean(axis=0) for s in starts]
        np.testing.assert_allclose(f[index], np.mean(segment_f, axis=0), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(z[index], np.mean(segment_z, axis=0), atol=1e-5)

    # Monte Carlo: the mean of N samples scatters around the posterior mean with std 0.5 / sqrt(N * segments).
    f_mc, _ = model_embeddings(model, utterances, mc=400, seed=1)
    assert not np.allclose(f_mc, f)
    assert np.abs(f_mc - f)[0].max() < 5 * 0.5 / np.sqrt(400 * 3)
    f_one, _ = model_embeddings(model, utterances, mc=1, seed=1)
    assert 0.1 < np.std(f_one[1] - f[1]) < 1.0  # one sample per single segment: std 0.5

    with pytest.raises(EvaluationError, match="fewer than one segment"):
        model_embeddings(model, [np.zeros((10, 200), np.float32)])


# ------------------------------------------------------------------------------- synthetic corpus


def _voice(rng, f0: float, formant: float, seconds: float) -> np.ndarray:
    """A "speaker": a pitch and a spectral envelope of its own."""
    return speech(seconds, f0=f0, formant=formant, seed=int(rng.integers(1 << 30)))


@pytest.fixture(scope="module")
def synthetic_corpus(tmp_path_factory):
    """An open corpus (metadata.csv): 8 training voices and 4 test voices, 4 utterances each, plus one
    test utterance too short for a segment."""
    root = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(5)
    rows = []
    voices = [(90 + 23 * i, 500 + 90 * ((i * 5) % 12)) for i in range(12)]
    for index, (f0, formant) in enumerate(voices):
        split = "test" if index % 3 == 2 else "train"
        speaker = f"spk{index:02d}"
        (root / speaker).mkdir()
        for u in range(4):
            name = f"{speaker}/u{u}.wav"
            sf.write(root / name, _voice(rng, f0 * rng.uniform(0.97, 1.03), formant, rng.uniform(0.6, 1.0)), SR)
            rows.append({"speaker": speaker, "utterance": f"u{u}", "path": name, "split": split})
    sf.write(root / "spk02" / "short.wav", _voice(rng, 100, 600, 0.1), SR)
    rows.append({"speaker": "spk02", "utterance": "short", "path": "spk02/short.wav", "split": "test"})
    with open(root / "metadata.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["speaker", "utterance", "path", "split"])
        writer.writeheader()
        writer.writerows(rows)
    return root


SMALL_IVECTOR = IVectorOptions(n_components=4, rank=4, iterations=3)


def test_evaluate_end_to_end(tiny_model, synthetic_corpus, tmp_path):
    model_dir, _, _ = tiny_model
    det = tmp_path / "plots" / "det.png"
    report = evaluate(synthetic_corpus, model_dir=model_dir, ivector=SMALL_IVECTOR, plot=det, device="cpu")

    assert report["split"] == "test"
    assert report["utterances"] == 16 and report["speakers"] == 4
    assert report["skipped"]["too_short"] == 1
    assert report["skipped"]["too_short_utterances"] == ["spk02/short"]
    assert report["trials"] == 16 * 15 // 2
    assert report["target_trials"] == 4 * 6
    assert [row["embedding"] for row in report["results"]] == ["f", "z", "mfcc", "ivector"]
    dims = {row["embedding"]: row["dim"] for row in report["results"]}
    assert dims == {"f": 6, "z": 3, "mfcc": 19, "ivector": 4}
    for row in report["results"]:
        assert (row["eer"], row["min_dcf"]) == (report[f"eer_{row['embedding']}"], report[f"min_dcf_{row['embedding']}"])
    # The driver scores the embeddings of the kept test utterances on all their pairs: recomputed here
    # from the audio through the public pieces, f's EER and minDCF come out the same.
    from training.data.audio import load_audio
    from vc.dsp import log_magnitude
    from vc.model import load_model

    model = load_model(model_dir, device="cpu")
    rows = [r for r in csv.DictReader(open(synthetic_corpus / "metadata.csv")) if r["split"] == "test"]
    rows = [r for r in rows if r["utterance"] != "short"]
    frames = [log_magnitude(load_audio(synthetic_corpus / r["path"], sr=16000), cfg=model.feature_config) for r in rows]
    f, _ = model_embeddings(model, frames)
    first, second, is_target = all_pairs_trials([r["speaker"] for r in rows])
    scores = cosine_scores(f, first, second)
    assert report["eer_f"] == pytest.approx(equal_error_rate(scores[is_target], scores[~is_target])[0], abs=1e-9)
    assert report["min_dcf_f"] == pytest.approx(min_dcf(scores[is_target], scores[~is_target])[0], abs=1e-9)
    # The voices differ in pitch and timbre only: the spectrum-mean embeddings find them...
    assert report["eer_mfcc"] < 0.1 and report["eer_ivector"] < 0.1
    assert report["eer_f"] < 0.2
    # ... while this model's z holds only deviations from the mean spectrum: near chance.
    assert report["eer_z"] > 0.3 and report["min_dcf_z"] > report["min_dcf_f"]
    assert det.stat().st_size > 10000
    assert (tmp_path / "plots" / "det-f-pca.png").stat().st_size > 10000
    assert not list((tmp_path / "plots").glob(".*part"))
    table = format_table(report)
    assert table.splitlines()[0].split() == ["embedding", "dim", "EER", "%", "minDCF", "trials"]
    assert "1 skipped as too short" in table


def test_chunked_encoding_matches_one_pass(tiny_model, synthetic_corpus, monkeypatch):
    import training.eval.driver

    model_dir, _, _ = tiny_model
    whole = evaluate(synthetic_corpus, model_dir=model_dir, embeddings=["f", "z"], device="cpu", mc=2, seed=3)
    monkeypatch.setattr(training.eval.driver, "_ENCODE_CHUNK", 5)  # 16 utterances: chunks of 5, 5, 5, 1
    chunked = evaluate(synthetic_corpus, model_dir=model_dir, embeddings=["f", "z"], device="cpu", mc=2, seed=3)
    assert chunked["eer_z"] == pytest.approx(whole["eer_z"], abs=1e-9)
    assert chunked["utterances"] == whole["utterances"]
    # Monte Carlo draws depend on the chunking, but stay near the posterior mean's result.
    assert abs(chunked["eer_f"] - whole["eer_f"]) < 0.1


def test_evaluate_is_deterministic_and_honours_trial_lists(synthetic_corpus, tmp_path):
    trials = tmp_path / "trials.txt"
    trials.write_text("spk02/u0 spk02/u1\nspk02/u0 spk05/u0\nspk02/u0 spk02/short target\n")
    report = evaluate(synthetic_corpus, embeddings=["mfcc"], trials=str(trials))
    assert report["trials"] == 2 and report["target_trials"] == 1
    assert report["skipped"]["trials_with_skipped_utterances"] == 1
    again = evaluate(synthetic_corpus, embeddings=["mfcc"], trials=str(trials))
    assert again["eer_mfcc"] == report["eer_mfcc"]


def test_cli_json_and_errors(tiny_model, synthetic_corpus, tmp_path, capsys, monkeypatch):
    model_dir, _, _ = tiny_model
    code = eer_main(["--model", str(model_dir), "--data", str(synthetic_corpus), "--embedding", "f", "z", "mfcc",
                     "--mc", "3", "--json", "--quiet", "--device", "cpu"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    report = json.loads(captured.out)
    assert set(report) >= {"eer_f", "eer_z", "eer_mfcc", "results", "trials"}
    assert "eer_ivector" not in report
    assert report["mc"] == 3

    monkeypatch.setenv("VC_MODEL", str(tmp_path / "no-model"))
    code = eer_main(["--data", str(synthetic_corpus), "--embedding", "f"])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("vc-eer: error: ") and "no-model" in err
    assert len(err.strip().splitlines()) == 1

    missing = tmp_path / "nowhere"
    code = eer_main(["--data", str(missing), "--embedding", "mfcc"])
    err = capsys.readouterr().err
    assert code == 1 and len(err.strip().splitlines()) == 1 and str(missing) in err

    code = eer_main(["--data", str(synthetic_corpus), "--embedding", "mfcc", "--split", "nosuch"])
    err = capsys.readouterr().err
    assert code == 1 and "nosuch" in err and "Traceback" not in err


def test_feature_cache_gives_the_same_results_as_the_corpus(tiny_model, synthetic_corpus, tmp_path):
    from training.data.corpora import open_corpus
    from training.data.features import build_feature_cache

    model_dir, _, _ = tiny_model
    cache = tmp_path / "cache"
    build_feature_cache(open_corpus(synthetic_corpus), cache, jobs=1, progress=False, log=lambda message: None)
    from_cache = evaluate(cache, model_dir=model_dir, embeddings=["f", "mfcc"], device="cpu")
    from_corpus = evaluate(synthetic_corpus, model_dir=model_dir, embeddings=["f", "mfcc"], device="cpu")
    assert from_cache["skipped"]["by_feature_cache"] == 1  # the too-short file never entered the cache
    assert from_cache["utterances"] == from_corpus["utterances"] == 16
    assert from_cache["eer_f"] == pytest.approx(from_corpus["eer_f"], abs=1e-9)
    assert from_cache["eer_mfcc"] == pytest.approx(from_corpus["eer_mfcc"], abs=1e-9)


def test_timit_defaults_to_the_core_test_set_without_sa_sentences(tmp_path):
    rng = np.random.default_rng(7)
    speakers = {("TEST", "MDAB0"): (110, 600), ("TEST", "FELC0"): (210, 900), ("TEST", "MABC0"): (150, 700),
                ("TRAIN", "MXYZ0"): (120, 650)}
    for (top, speaker), (f0, formant) in speakers.items():
        directory = tmp_path / "timit" / top / "DR1" / speaker
        directory.mkdir(parents=True)
        for name in ("SA1", "SX10", "SX11", "SI20"):
            sf.write(directory / f"{name}.WAV", _voice(rng, f0, formant, 0.4), SR)
    report = evaluate(tmp_path / "timit", embeddings=["mfcc"])
    assert report["split"] == "core-test"
    assert report["speakers"] == 2  # MABC0 is not in the core test set
    assert report["utterances"] == 6  # SA sentences are read by everyone: left out
    assert report["trials"] == 15


def test_cli_scores_the_shipped_fhvae_baselines_by_default(synthetic_corpus, capsys):
    """`vc-eer` without --fhvae scores the two FHVAEs in models/ (alpha 10 as fhvae, alpha 0 as fhvae0) next
    to the other embeddings; --embedding without fhvae leaves them out."""
    code = eer_main(["--data", str(synthetic_corpus), "--embedding", "mfcc", "fhvae", "--json", "--quiet"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    report = json.loads(captured.out)
    for key in ("eer_fhvae_z2", "eer_fhvae_z1", "eer_fhvae0_z2", "eer_fhvae0_z1", "eer_mfcc"):
        assert 0.0 <= report[key] <= 1.0, key
    assert report["fhvae_models"]["fhvae"]["alpha"] == 10.0 and report["fhvae_models"]["fhvae0"]["alpha"] == 0.0
    assert eer_main(["--data", str(synthetic_corpus), "--embedding", "mfcc", "--json", "--quiet"]) == 0
    assert "eer_fhvae_z2" not in json.loads(capsys.readouterr().out)
