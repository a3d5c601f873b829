"""The i-vector maths on synthetic data whose answer is known."""

import numpy as np
import pytest

from training.eer import equal_error_rate
from training.ivector import (
    DiagonalGMM,
    IVectorExtractor,
    TotalVariability,
    baum_welch_statistics,
    train_lda_wccn,
    train_total_variability,
    train_ubm,
)


def _sample_gmm(gmm: DiagonalGMM, n: int, rng, mean_offsets=None) -> np.ndarray:
    components = rng.choice(gmm.n_components, size=n, p=gmm.weights)
    means = gmm.means if mean_offsets is None else gmm.means + mean_offsets
    return means[components] + rng.standard_normal((n, gmm.dim)) * np.sqrt(gmm.variances[components])


def _match_components(estimated: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Index of the nearest estimated mean for every true mean."""
    distances = np.linalg.norm(true[:, None, :] - estimated[None, :, :], axis=2)
    return distances.argmin(axis=1)


def test_ubm_em_recovers_well_separated_components():
    rng = np.random.default_rng(1)
    true = DiagonalGMM(
        weights=np.array([0.1, 0.2, 0.3, 0.4]),
        means=np.array([[-10.0, 0.0], [10.0, 0.0], [0.0, 10.0], [0.0, -10.0]]),
        variances=np.array([[1.0, 0.5], [0.5, 1.0], [2.0, 1.0], [1.0, 1.0]]),
    )
    frames = _sample_gmm(true, 20000, rng)
    history: list[float] = []
    estimated = train_ubm(frames, n_components=4, iterations_per_split=5, final_iterations=25, history=history)

    nearest = _match_components(estimated.means, true.means)
    assert sorted(nearest) == [0, 1, 2, 3], "each true component must have its own estimate"
    np.testing.assert_allclose(estimated.means[nearest], true.means, atol=0.1)
    np.testing.assert_allclose(estimated.weights[nearest], true.weights, atol=0.02)
    np.testing.assert_allclose(estimated.variances[nearest], true.variances, rtol=0.1)
    # EM never lowers the likelihood (within one mixture size; splitting may change it).
    final_level = history[-25:]
    assert all(b >= a - 1e-9 for a, b in zip(final_level, final_level[1:]))
    # The fitted model explains the data about as well as the generating one.
    assert estimated.mean_log_likelihood(frames) >= true.mean_log_likelihood(frames) - 0.01


def test_ubm_grows_to_a_size_that_is_not_a_power_of_two():
    rng = np.random.default_rng(2)
    gmm = train_ubm(rng.standard_normal((3000, 3)), n_components=6, iterations_per_split=1, final_iterations=1)
    assert gmm.n_components == 6
    assert np.isclose(gmm.weights.sum(), 1.0)
    assert np.all(gmm.variances > 0)


def test_ubm_rejects_too_little_data():
    with pytest.raises(ValueError, match="too few"):
        train_ubm(np.zeros((10, 2)), n_components=8)


def test_baum_welch_statistics_match_a_direct_computation():
    rng = np.random.default_rng(3)
    ubm = DiagonalGMM(
        weights=np.array([0.5, 0.5]),
        means=np.array([[0.0, 0.0], [3.0, 1.0]]),
        variances=np.array([[1.0, 2.0], [0.5, 1.0]]),
    )
    frames = rng.standard_normal((7, 2)) * 2
    zeroth, first = baum_welch_statistics(ubm, [frames])

    def density(x, c):
        var = ubm.variances[c]
        return ubm.weights[c] * np.prod(np.exp(-0.5 * (x - ubm.means[c]) ** 2 / var) / np.sqrt(2 * np.pi * var))

    gamma = np.array([[density(x, c) for c in range(2)] for x in frames])
    gamma /= gamma.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(zeroth[0], gamma.sum(axis=0), rtol=1e-10)
    expected_first = np.stack([(gamma[:, c : c + 1] * (frames - ubm.means[c])).sum(axis=0) for c in range(2)])
    np.testing.assert_allclose(first[0], expected_first, rtol=1e-10, atol=1e-12)


def test_ivector_posterior_matches_the_textbook_formula():
    """w = (I + T^T S^-1 N T)^-1 T^T S^-1 F with explicit block matrices."""
    rng = np.random.default_rng(4)
    n_components, dim, rank = 3, 2, 2
    ubm = DiagonalGMM(
        weights=np.full(n_components, 1 / 3),
        means=rng.standard_normal((n_components, dim)),
        variances=rng.uniform(0.5, 2.0, (n_components, dim)),
    )
    t_matrix = rng.standard_normal((n_components * dim, rank))
    sigma = ubm.variances.reshape(-1)
    tv = TotalVariability(ubm=ubm, matrix=t_matrix / np.sqrt(sigma)[:, None])
    np.testing.assert_allclose(tv.unwhitened(), t_matrix)

    zeroth = rng.uniform(1, 20, (1, n_components))
    first = rng.standard_normal((1, n_components, dim)) * 3
    big_n = np.diag(np.repeat(zeroth[0], dim))
    precision = np.eye(rank) + t_matrix.T @ np.diag(1 / sigma) @ big_n @ t_matrix
    expected = np.linalg.solve(precision, t_matrix.T @ np.diag(1 / sigma) @ first[0].reshape(-1))
    np.testing.assert_allclose(tv.extract(zeroth, first)[0], expected, rtol=1e-9)
    (_, _, covariance), = list(tv.posterior(zeroth, first))
    np.testing.assert_allclose(covariance[0], np.linalg.inv(precision), rtol=1e-9)


def _low_rank_corpus(rng, ubm, t_true, n_speakers, utts_per_speaker, frames_per_utt):
    """Utterances drawn from the GMM whose means are shifted by T w_speaker (the i-vector model)."""
    speakers = rng.standard_normal((n_speakers, t_true.shape[1]))
    utterances, labels = [], []
    for speaker, w in enumerate(speakers):
        offsets = (t_true @ w).reshape(ubm.n_components, ubm.dim)
        for _ in range(utts_per_speaker):
            utterances.append(_sample_gmm(ubm, frames_per_utt, rng, offsets))
            labels.append(speaker)
    return utterances, np.array(labels)


def _known_model(rng, n_components=8, dim=3, rank=3):
    ubm = DiagonalGMM(
        weights=np.full(n_components, 1 / n_components),
        means=rng.standard_normal((n_components, dim)) * 8,
        variances=rng.uniform(0.5, 1.5, (n_components, dim)),
    )
    t_true = rng.standard_normal((n_components * dim, rank)) * 0.7
    return ubm, t_true


def test_total_variability_em_recovers_the_generating_subspace():
    rng = np.random.default_rng(5)
    ubm, t_true = _known_model(rng)
    utterances, _ = _low_rank_corpus(rng, ubm, t_true, n_speakers=150, utts_per_speaker=2, frames_per_utt=200)
    zeroth, first = baum_welch_statistics(ubm, utterances)
    tv = train_total_variability(ubm, zeroth, first, rank=3, iterations=15, seed=0)

    # T is identified up to a rotation of w: compare column spaces (cosines of the principal angles).
    learned, _ = np.linalg.qr(tv.unwhitened())
    true, _ = np.linalg.qr(t_true)
    cosines = np.linalg.svd(learned.T @ true, compute_uv=False)
    assert cosines.min() > 0.97, cosines
    # ... and the scale: T T^T (the supervector covariance) matches.
    ratio = np.linalg.norm(tv.unwhitened() @ tv.unwhitened().T) / np.linalg.norm(t_true @ t_true.T)
    assert 0.8 < ratio < 1.2, ratio


def test_ivectors_separate_the_generating_speakers():
    rng = np.random.default_rng(6)
    ubm, t_true = _known_model(rng, rank=8)
    train, _ = _low_rank_corpus(rng, ubm, t_true, n_speakers=60, utts_per_speaker=3, frames_per_utt=150)
    extractor = IVectorExtractor.train(train, n_components=8, rank=8, iterations=8, seed=0)
    assert extractor.dim == 8

    test, labels = _low_rank_corpus(rng, ubm, t_true, n_speakers=10, utts_per_speaker=4, frames_per_utt=200)
    vectors = extractor.embed(test)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    first, second = np.triu_indices(len(test), k=1)
    scores = np.sum(vectors[first] * vectors[second], axis=1)
    same = labels[first] == labels[second]
    eer, _ = equal_error_rate(scores[same], scores[~same])
    assert eer < 0.05, eer
    # Without the speaker shifts there is nothing to find: i-vectors must not pretend otherwise.
    noise, noise_labels = _low_rank_corpus(rng, ubm, 0 * t_true, n_speakers=10, utts_per_speaker=4, frames_per_utt=200)
    noise_vectors = extractor.embed(noise)
    noise_scores = np.sum(noise_vectors[first] * noise_vectors[second], axis=1)
    noise_eer, _ = equal_error_rate(noise_scores[same], noise_scores[~same])
    assert noise_eer > 0.3, noise_eer


def test_lda_wccn_keeps_the_speaker_directions_and_whitens_the_rest():
    """Speakers differ in 2 of 10 dimensions; the other 8 carry large within-speaker noise."""
    rng = np.random.default_rng(8)

    def draw(n_speakers, per_speaker):
        centres = rng.standard_normal((n_speakers, 2))
        vectors, labels = [], []
        for speaker, centre in enumerate(centres):
            signal = centre + 0.1 * rng.standard_normal((per_speaker, 2))
            nuisance = 3.0 * rng.standard_normal((per_speaker, 8))
            vectors.append(np.hstack([signal, nuisance]))
            labels += [speaker] * per_speaker
        return np.vstack(vectors), np.array(labels)

    train, train_labels = draw(40, 10)
    projection = train_lda_wccn(train, train_labels, dim=5)
    assert projection.shape == (10, 5)
    # WCCN: the average within-speaker covariance of the projected training data is the identity.
    projected = train @ projection
    within = np.mean([np.cov(projected[train_labels == s], rowvar=False, bias=True) for s in range(40)], axis=0)
    np.testing.assert_allclose(within, np.eye(5), atol=1e-6)
    # The two leading LDA directions are the speaker dimensions.
    leading, _ = np.linalg.qr(projection[:, :2])
    assert np.linalg.norm(leading[:2]) ** 2 > 0.99 * 2

    test, labels = draw(10, 6)
    first, second = np.triu_indices(len(test), k=1)
    same = labels[first] == labels[second]

    def eer_of(vectors):
        unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        scores = np.sum(unit[first] * unit[second], axis=1)
        return equal_error_rate(scores[same], scores[~same])[0]

    centred = test - train.mean(axis=0)
    oracle = eer_of(centred[:, :2])  # cosine on exactly the speaker dimensions
    assert eer_of(centred) > 0.3
    assert eer_of(centred @ projection[:, :2]) < oracle + 0.02
    # Capped at n_speakers - 1.
    assert train_lda_wccn(train[:20], train_labels[:20], dim=5).shape == (10, 1)


def test_extractor_with_lda_projects_to_the_speaker_subspace():
    rng = np.random.default_rng(9)
    ubm, t_true = _known_model(rng, rank=4)
    train, train_labels = _low_rank_corpus(rng, ubm, t_true, n_speakers=30, utts_per_speaker=3, frames_per_utt=150)
    extractor = IVectorExtractor.train(train, n_components=8, rank=6, iterations=5, speakers=train_labels, lda_dim=3)
    assert extractor.dim == 3
    vectors = extractor.embed(train[:5])
    assert vectors.shape == (5, 3)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match="speaker"):
        IVectorExtractor.train(train, n_components=8, rank=6, iterations=1, lda_dim=3)
