"""The FHVAE baseline (training.fhvae): its objective term by term, its trainer, and its place in vc-eer."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from training.config import TrainingError
from training.fhvae import FHVAE, Z2_PRIOR_STD, FHVAEConfig, mu2_estimate

TINY = dict(feature_dim=12, z1_dim=3, z2_dim=4, hidden_dim=16)


def _model(n_sequences=5, seed=0):
    torch.manual_seed(seed)
    return FHVAE(FHVAEConfig(**TINY, n_sequences=n_sequences))


def _batch(n_sequences=5, per_sequence=4, seed=1):
    """Segments whose sequences differ by a constant offset of every frame, like a voice."""
    g = torch.Generator().manual_seed(seed)
    sequence = torch.arange(n_sequences).repeat_interleave(per_sequence)
    offsets = 2.0 * torch.randn(n_sequences, 1, TINY["feature_dim"], generator=g)
    x = offsets[sequence] + 0.3 * torch.randn(len(sequence), 6, TINY["feature_dim"], generator=g)
    return x, sequence, torch.full((len(sequence),), per_sequence)


def test_terms_are_finite_and_the_discriminative_term_is_weighted_by_alpha():
    model, (x, sequence, n) = _model(), _batch()
    with torch.no_grad():
        model.mu2.normal_()
    torch.manual_seed(3)
    loss0, terms0 = model(x, sequence, n, alpha=0.0)
    torch.manual_seed(3)
    loss10, terms10 = model(x, sequence, n, alpha=10.0)
    assert all(torch.isfinite(v) for v in terms0.values())
    # The lower bound is its terms; at alpha 0 the loss is exactly its negative, the same noise gives the
    # same bound at alpha 10 and the loss moves by -10 log p(i | z2bar), which is below 0.
    assert float(terms0["lower_bound"]) == pytest.approx(
        float(-terms0["recon"] - terms0["kl_z1"] - terms0["kl_z2"] + terms0["log_p_mu2"]), rel=1e-5)
    assert float(loss0.detach()) == pytest.approx(-float(terms0["lower_bound"]), rel=1e-6)
    assert float(terms10["lower_bound"]) == pytest.approx(float(terms0["lower_bound"]), rel=1e-6)
    assert float(terms0["log_p_i"]) < 0
    assert float((loss10 - loss0).detach()) == pytest.approx(-10.0 * float(terms0["log_p_i"]), rel=1e-4)


def test_sequence_posterior_is_normalised_over_the_whole_table():
    model = _model(n_sequences=7)
    with torch.no_grad():
        model.mu2.normal_()
    z2bar, sequence = torch.randn(3, 4), torch.tensor([0, 6, 2])
    own, _ = model.sequence_log_posterior(z2bar, sequence)
    # log p(z2bar | mu2_j) with its constants, normalised by hand over all seven sequences.
    log_p = torch.distributions.Normal(model.mu2[None], Z2_PRIOR_STD).log_prob(z2bar[:, None]).sum(-1)
    expected = log_p[torch.arange(3), sequence] - torch.logsumexp(log_p, dim=1)
    torch.testing.assert_close(own, expected.detach(), rtol=1e-5, atol=1e-5)


def _fit_mu2_only(alpha: float, steps: int = 15):
    """Adam on the mu2 table alone (encoders frozen, so each segment's q(z2 | x) stays put)."""
    model, (x, sequence, n) = _model(), _batch()
    optimizer = torch.optim.Adam([model.mu2], lr=0.05)
    with torch.no_grad():
        z2bar = model.encode(x)[2]
    history = []
    for step in range(steps):
        torch.manual_seed(step)
        loss, terms = model(x, sequence, n, alpha=alpha)
        history.append(terms)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model, z2bar, sequence, history


def test_mu2_of_a_sequence_moves_towards_its_segments_z2():
    model, z2bar, sequence, history = _fit_mu2_only(alpha=0.0)
    centres = torch.stack([z2bar[sequence == i].mean(0) for i in range(5)])
    before = centres.norm(dim=1)                                  # every mu2 starts at 0
    after = (model.mu2.detach() - centres).norm(dim=1)
    assert torch.all(after < 0.5 * before)
    assert float(history[-1]["kl_z2"]) < float(history[0]["kl_z2"])


def test_the_discriminative_term_separates_the_sequences():
    _, _, _, plain = _fit_mu2_only(alpha=0.0)
    _, _, _, discriminative = _fit_mu2_only(alpha=10.0)
    assert float(discriminative[-1]["log_p_i"]) > float(discriminative[0]["log_p_i"])
    assert float(discriminative[-1]["log_p_i"]) > float(plain[-1]["log_p_i"])


def test_mu2_estimate_maximises_the_sequence_terms():
    z2 = torch.randn(6, 4) + 1.0
    mu2 = mu2_estimate(z2).requires_grad_(True)
    objective = (torch.distributions.Normal(mu2, Z2_PRIOR_STD).log_prob(z2).sum()
                 + torch.distributions.Normal(0.0, 1.0).log_prob(mu2).sum())
    (gradient,) = torch.autograd.grad(objective, mu2)
    assert gradient.abs().max() < 1e-4


def test_config_and_training_errors(tmp_path):
    with pytest.raises(ValueError, match="z2_dim"):
        FHVAEConfig(z2_dim=0)
    with pytest.raises(ValueError, match="no mu2 table"):
        FHVAE(FHVAEConfig(**TINY))(*_batch())
    from training.cli.fhvae import main

    assert main(["train", "--out", str(tmp_path / "run")]) == 1          # no --features
    assert main(["train", "--out", str(tmp_path / "run"), "--features", str(tmp_path / "none")]) == 1


# ------------------------------------------------------------------------------------- trainer and vc-eer


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    from training.dataset import write_synthetic_cache

    return write_synthetic_cache(tmp_path_factory.mktemp("cache"), n_speakers=4, utterances_per_speaker=3,
                                 frames_per_utterance=60, splits=("train", "test"))


def _train(cache, out, *, alpha=0.0, steps=6, resume=False, **options):
    from training.fhvae_train import FHVAETrainConfig, train

    config = FHVAETrainConfig(features=str(cache), out=str(out), alpha=alpha, steps=steps, batch_size=8,
                              checkpoint_every=3, log_every=3, model=dict(hidden_dim=16, z1_dim=3, z2_dim=4),
                              **options)
    return train(config, resume=resume, steps=steps if resume else None, log=lambda message: None)


def test_training_writes_a_run_that_resumes_exactly(cache, tmp_path):
    from safetensors.torch import load_file

    from training.checkpoints import latest_checkpoint

    whole = _train(cache, tmp_path / "whole", steps=6)
    _train(cache, tmp_path / "split", steps=3)
    split = _train(cache, tmp_path / "split", steps=6, resume=True)
    a, b = (load_file(latest_checkpoint(run) / "model.safetensors") for run in (whole, split))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    record = json.loads((whole / "fhvae.json").read_text())
    assert record["data"] == {"segments": 4 * 3 * 5, "sequences": 12, "speakers": 4}
    assert a["mu2"].shape == (12, 4)
    excluded = _train(cache, tmp_path / "excluded", steps=1, exclude_prefix=["spk00"])
    assert json.loads((excluded / "fhvae.json").read_text())["data"]["sequences"] == 9
    with pytest.raises(TrainingError, match="already holds a run"):
        _train(cache, tmp_path / "whole", steps=6)


@pytest.fixture(scope="module")
def runs(cache, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return _train(cache, root / "a0", alpha=0.0), _train(cache, root / "a10", alpha=10.0)


def test_vc_eer_scores_fhvae_z2_and_z1(cache, runs, capsys):
    from training.cli.eer import main as eer_main
    from training.eer import evaluate
    from training.eval.fhvae import FHVAEEncoder
    from training.eval.embeddings import model_embeddings

    a0, a10 = runs
    code = eer_main(["--data", str(cache), "--embedding", "mfcc", "--fhvae", str(a0), "--fhvae", str(a10),
                     "--json", "--quiet"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    report = json.loads(captured.out)
    for key in ("eer_fhvae_z2", "eer_fhvae_z1", "eer_fhvae10_z2", "eer_fhvae10_z1", "eer_mfcc"):
        assert 0.0 <= report[key] <= 1.0
    assert report["fhvae_models"]["fhvae10"]["alpha"] == 10.0
    dims = {row["embedding"]: row["dim"] for row in report["results"]}
    assert dims["fhvae_z2"] == 4 and dims["fhvae_z1"] == 3
    # The same protocol as f: mean over the utterance's segments of the posterior mean, scored by cosine.
    from training.data.cache import FeatureCache
    from training.eer import all_pairs_trials, cosine_scores, equal_error_rate

    split = FeatureCache(cache).split("test")
    frames = [np.asarray(split.utterance_frames(i), dtype=np.float32) for i in range(len(split.utterances))]
    z2, _ = model_embeddings(FHVAEEncoder(a0), frames)
    first, second, is_target = all_pairs_trials([u.speaker for u in split.utterances])
    scores = cosine_scores(z2, first, second)
    assert report["eer_fhvae_z2"] == pytest.approx(equal_error_rate(scores[is_target], scores[~is_target])[0])

    named = evaluate(cache, embeddings=["mfcc"], fhvae=[f"fhvae_a10={a10}"])
    assert "eer_fhvae_a10_z2" in named and "eer_fhvae_z2" not in named
    plain = evaluate(cache, embeddings=["mfcc"])
    assert not any(key.startswith("eer_fhvae") for key in plain) and "fhvae_models" not in plain


def test_vc_eer_fhvae_errors_are_one_line(cache, runs, tmp_path, capsys):
    from training.cli.eer import main as eer_main

    a0, _ = runs
    for fhvae in (str(tmp_path / "nothing"), f"x={a0}"):
        code = eer_main(["--data", str(cache), "--embedding", "mfcc", "--fhvae", fhvae, "--quiet"])
        err = capsys.readouterr().err
        assert code == 1 and err.startswith("vc-eer: error: ") and len(err.strip().splitlines()) == 1
    code = eer_main(["--data", str(cache), "--embedding", "mfcc", "--fhvae", f"fhvae={a0}", "--fhvae", f"fhvae={a0}",
                     "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and "two runs are named 'fhvae'" in err and len(err.strip().splitlines()) == 1
