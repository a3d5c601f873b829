"""i-vector speaker embeddings in numpy: diagonal GMM-UBM, Baum-Welch statistics, total variability.

The recipe is the classic one (Dehak et al. 2011, with Kenny's EM for the total-variability matrix):

1. A diagonal-covariance GMM (the universal background model) is trained by EM on acoustic frames of the
   training split, grown by mixture splitting so that no initial means have to be guessed.
2. Each utterance is summarised by its zeroth-order statistics ``N_c = sum_t gamma_tc`` and its centred
   first-order statistics ``F_c = sum_t gamma_tc (x_t - m_c)``.
3. The supervector model ``M = m + T w`` with ``w ~ N(0, I)`` is fitted by EM. All the work happens in
   the space whitened by the UBM covariances (``T'_c = Sigma_c^-1/2 T_c``), where the posterior of ``w`` is
   ``precision L = I + sum_c N_c T'_c^T T'_c`` and ``mean = L^-1 T'^T F'``.
4. The i-vector is that posterior mean, centred on the training i-vectors' mean and length-normalised, so
   cosine scoring is a plain dot product.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass, field

import numpy as np
from scipy import linalg as scipy_linalg
from scipy.special import logsumexp

__all__ = [
    "DiagonalGMM",
    "train_ubm",
    "baum_welch_statistics",
    "TotalVariability",
    "train_total_variability",
    "IVectorExtractor",
    "train_lda_wccn",
    "single_threaded_blas",
]

# Relative variance floor: keeps a component that collapses onto a few frames from dominating the
# likelihood with a near-zero variance.
_VARIANCE_FLOOR = 1e-3
_FRAME_CHUNK = 65536


def single_threaded_blas():
    """A context in which BLAS uses one thread.

    Everything here is many small matrix products and 100 x 100 inversions; on a loaded 2-core machine
    OpenBLAS's thread hand-offs made them 5-10x slower than one thread (measured: i-vector training
    6.5 min against 1 min). threadpoolctl comes with librosa (through scikit-learn); without it BLAS
    keeps its own setting.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _blas_single_threaded(function):
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with single_threaded_blas():
            return function(*args, **kwargs)

    return wrapper


@dataclass
class DiagonalGMM:
    """A Gaussian mixture with diagonal covariances: ``weights (C,)``, ``means (C, D)``, ``variances (C, D)``."""

    weights: np.ndarray
    means: np.ndarray
    variances: np.ndarray

    @property
    def n_components(self) -> int:
        return self.means.shape[0]

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def _component_log_likelihoods(self, frames: np.ndarray) -> np.ndarray:
        """``log(w_c) + log N(x_t; m_c, S_c)`` for every frame and component, shape (T, C)."""
        precisions = 1.0 / self.variances
        # Expanding the quadratic form turns the (T, C, D) broadcast into two matrix products.
        quadratic = (
            (frames**2) @ precisions.T
            - 2.0 * frames @ (self.means * precisions).T
            + np.sum(self.means**2 * precisions, axis=1)
        )
        constant = np.log(self.weights) - 0.5 * (
            self.dim * np.log(2.0 * np.pi) + np.sum(np.log(self.variances), axis=1)
        )
        return constant - 0.5 * quadratic

    def posteriors(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Component responsibilities (T, C) and per-frame log-likelihoods (T,)."""
        joint = self._component_log_likelihoods(np.asarray(frames, dtype=np.float64))
        frame_ll = logsumexp(joint, axis=1)
        return np.exp(joint - frame_ll[:, None]), frame_ll

    def mean_log_likelihood(self, frames: np.ndarray) -> float:
        total = 0.0
        for start in range(0, len(frames), _FRAME_CHUNK):
            total += float(self.posteriors(frames[start : start + _FRAME_CHUNK])[1].sum())
        return total / len(frames)


def _em_step(gmm: DiagonalGMM, frames: np.ndarray, variance_floor: np.ndarray) -> tuple[DiagonalGMM, float]:
    """One EM iteration; returns the updated model and the mean log-likelihood under the *old* model."""
    n_components, dim = gmm.means.shape
    zeroth = np.zeros(n_components)
    first = np.zeros((n_components, dim))
    second = np.zeros((n_components, dim))
    log_likelihood = 0.0
    for start in range(0, len(frames), _FRAME_CHUNK):
        chunk = frames[start : start + _FRAME_CHUNK]
        gamma, frame_ll = gmm.posteriors(chunk)
        log_likelihood += float(frame_ll.sum())
        zeroth += gamma.sum(axis=0)
        first += gamma.T @ chunk
        second += gamma.T @ (chunk**2)
    # An empty component keeps its old parameters rather than producing NaNs; its weight goes to ~0.
    occupied = zeroth > 1e-8
    safe = np.where(occupied, zeroth, 1.0)[:, None]
    means = np.where(occupied[:, None], first / safe, gmm.means)
    variances = np.where(occupied[:, None], second / safe - means**2, gmm.variances)
    variances = np.maximum(variances, variance_floor)
    weights = np.maximum(zeroth / zeroth.sum(), 1e-10)
    weights /= weights.sum()
    return DiagonalGMM(weights, means, variances), log_likelihood / len(frames)


def _split_components(gmm: DiagonalGMM, target: int) -> DiagonalGMM:
    """Split the heaviest components in two (means moved apart by +-0.2 standard deviations)."""
    n_split = min(gmm.n_components, target - gmm.n_components)
    heaviest = np.argsort(gmm.weights)[::-1][:n_split]
    offsets = 0.2 * np.sqrt(gmm.variances[heaviest])
    means = gmm.means.copy()
    means[heaviest] -= offsets
    weights = gmm.weights.copy()
    weights[heaviest] /= 2.0
    return DiagonalGMM(
        weights=np.concatenate([weights, weights[heaviest]]),
        means=np.concatenate([means, gmm.means[heaviest] + offsets]),
        variances=np.concatenate([gmm.variances, gmm.variances[heaviest]]),
    )


@_blas_single_threaded
def train_ubm(
    frames: np.ndarray,
    n_components: int = 64,
    iterations_per_split: int = 4,
    final_iterations: int = 8,
    max_frames: int | None = 200_000,
    seed: int = 0,
    history: list[float] | None = None,
) -> DiagonalGMM:
    """Train a diagonal GMM-UBM by EM with mixture splitting (1 -> 2 -> 4 ... -> ``n_components``).

    ``frames`` is (n_frames, dim). At most ``max_frames`` randomly chosen frames are used, which is
    plenty for a 64-component model and keeps training to seconds. When ``history`` is given, the mean
    log-likelihood before every EM step is appended to it (EM never decreases it).
    """
    frames = np.asarray(frames)
    if frames.ndim != 2 or len(frames) == 0:
        raise ValueError(f"UBM training needs a non-empty (n_frames, dim) array, got shape {frames.shape}")
    if n_components < 1:
        raise ValueError(f"n_components must be >= 1, got {n_components}")
    if len(frames) < 2 * n_components:
        raise ValueError(f"{len(frames)} frames are too few for a {n_components}-component UBM")
    rng = np.random.default_rng(seed)
    if max_frames is not None and len(frames) > max_frames:
        frames = frames[np.sort(rng.choice(len(frames), size=max_frames, replace=False))]
    frames = np.asarray(frames, dtype=np.float64)  # after subsampling: the full set may be large

    global_variance = frames.var(axis=0)
    variance_floor = np.maximum(_VARIANCE_FLOOR * global_variance, 1e-12)
    gmm = DiagonalGMM(
        weights=np.ones(1),
        means=frames.mean(axis=0, keepdims=True),
        variances=np.maximum(global_variance, variance_floor)[None, :],
    )
    while True:
        last_level = gmm.n_components >= n_components
        for _ in range(final_iterations if last_level else iterations_per_split):
            gmm, log_likelihood = _em_step(gmm, frames, variance_floor)
            if history is not None:
                history.append(log_likelihood)
        if last_level:
            return gmm
        gmm = _split_components(gmm, n_components)


@_blas_single_threaded
def baum_welch_statistics(
    ubm: DiagonalGMM, utterance_frames: list[np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Zeroth-order (U, C) and UBM-centred first-order (U, C, D) statistics of each utterance."""
    n_utt = len(utterance_frames)
    zeroth = np.zeros((n_utt, ubm.n_components))
    first = np.zeros((n_utt, ubm.n_components, ubm.dim))
    for index, frames in enumerate(utterance_frames):
        frames = np.asarray(frames, dtype=np.float64)
        if frames.ndim != 2 or frames.shape[1] != ubm.dim:
            raise ValueError(f"utterance {index}: frames of shape {frames.shape} do not match the UBM dim {ubm.dim}")
        for start in range(0, len(frames), _FRAME_CHUNK):
            chunk = frames[start : start + _FRAME_CHUNK]
            gamma, _ = ubm.posteriors(chunk)
            zeroth[index] += gamma.sum(axis=0)
            first[index] += gamma.T @ chunk
    first -= zeroth[:, :, None] * ubm.means[None, :, :]
    return zeroth, first


@dataclass
class TotalVariability:
    """The total-variability matrix, stored whitened by the UBM: ``matrix (C*D, R)`` = Sigma^-1/2 T."""

    ubm: DiagonalGMM
    matrix: np.ndarray
    history: list[float] = field(default_factory=list)

    @property
    def rank(self) -> int:
        return self.matrix.shape[1]

    def unwhitened(self) -> np.ndarray:
        """T itself, (C*D, R), in the feature space of the UBM."""
        return self.matrix * np.sqrt(self.ubm.variances.reshape(-1))[:, None]

    def _whitened_first_order(self, first: np.ndarray) -> np.ndarray:
        return (first / np.sqrt(self.ubm.variances)[None]).reshape(len(first), -1)

    def posterior(self, zeroth: np.ndarray, first: np.ndarray, batch_size: int = 256):
        """Yield ``(rows, mean (B, R), covariance (B, R, R))`` of ``w`` for batches of utterances."""
        n_components, dim = self.ubm.means.shape
        rank = self.rank
        per_component = self.matrix.reshape(n_components, dim, rank)
        # T'_c^T T'_c for every component, flattened so the precision of a batch is one matrix product.
        gram = np.einsum("cdr,cds->crs", per_component, per_component).reshape(n_components, rank * rank)
        whitened = self._whitened_first_order(first)
        identity = np.eye(rank)
        for start in range(0, len(zeroth), batch_size):
            rows = slice(start, min(start + batch_size, len(zeroth)))
            precision = identity + (zeroth[rows] @ gram).reshape(-1, rank, rank)
            covariance = np.linalg.inv(precision)
            covariance = 0.5 * (covariance + covariance.transpose(0, 2, 1))
            projected = whitened[rows] @ self.matrix
            mean = np.einsum("brs,bs->br", covariance, projected)
            yield rows, mean, covariance

    def extract(self, zeroth: np.ndarray, first: np.ndarray) -> np.ndarray:
        """Posterior means of ``w`` (the raw i-vectors), (U, R)."""
        out = np.zeros((len(zeroth), self.rank))
        with single_threaded_blas():
            for rows, mean, _ in self.posterior(zeroth, first):
                out[rows] = mean
        return out


@_blas_single_threaded
def train_total_variability(
    ubm: DiagonalGMM,
    zeroth: np.ndarray,
    first: np.ndarray,
    rank: int = 100,
    iterations: int = 5,
    minimum_divergence: bool = True,
    seed: int = 0,
) -> TotalVariability:
    """Fit T by EM on Baum-Welch statistics (zeroth (U, C), centred first (U, C, D)).

    E-step: the posterior of each utterance's ``w``. M-step, per component c:
    ``T'_c = (sum_u F'_c(u) E[w_u]^T) (sum_u N_c(u) E[w_u w_u^T])^-1``. The optional minimum-divergence
    step then rescales T so that the posterior second moment averages to the identity, which the prior
    assumes; it speeds convergence without changing the subspace. ``history`` of the result holds,
    per iteration, the mean squared norm of the posterior means.
    """
    zeroth = np.asarray(zeroth, dtype=np.float64)
    first = np.asarray(first, dtype=np.float64)
    n_utt, n_components = zeroth.shape
    dim = ubm.dim
    if first.shape != (n_utt, n_components, dim):
        raise ValueError(f"first-order statistics of shape {first.shape} do not match zeroth {zeroth.shape} and dim {dim}")
    supervector_dim = n_components * dim
    if not 1 <= rank <= supervector_dim:
        raise ValueError(f"rank must be between 1 and {supervector_dim}, got {rank}")
    if n_utt < 2:
        raise ValueError("total-variability training needs at least two utterances")

    rng = np.random.default_rng(seed)
    whitened_means = (first / np.sqrt(ubm.variances)[None]) / np.maximum(zeroth, 1.0)[:, :, None]
    # Start with columns whose spread matches that of the utterances' whitened mean supervectors.
    spread = float(np.mean(whitened_means.var(axis=0)))
    model = TotalVariability(ubm=ubm, matrix=rng.standard_normal((supervector_dim, rank)) * np.sqrt(max(spread, 1e-6) / rank))

    whitened = model._whitened_first_order(first)
    for _ in range(iterations):
        second_moment = np.zeros((n_components, rank * rank))
        cross = np.zeros((supervector_dim, rank))
        mean_second_moment = np.zeros((rank, rank))
        squared_norm = 0.0
        for rows, mean, covariance in model.posterior(zeroth, first):
            moment = covariance + mean[:, :, None] * mean[:, None, :]
            second_moment += zeroth[rows].T @ moment.reshape(len(mean), -1)
            cross += whitened[rows].T @ mean
            mean_second_moment += moment.sum(axis=0)
            squared_norm += float(np.sum(mean**2))
        model.history.append(squared_norm / n_utt)
        second_moment = second_moment.reshape(n_components, rank, rank)
        updated = np.empty_like(model.matrix)
        for component in range(n_components):
            rows = slice(component * dim, (component + 1) * dim)
            # Solve (A_c X = C_c^T) rather than invert A_c: A_c is symmetric positive definite.
            updated[rows] = np.linalg.solve(second_moment[component], cross[rows].T).T
        if minimum_divergence:
            factor = np.linalg.cholesky(mean_second_moment / n_utt)
            updated = updated @ factor
        model.matrix = updated
    return model


def _length_normalise(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def train_lda_wccn(vectors: np.ndarray, speakers, dim: int) -> np.ndarray:
    """A (R, k) projection: LDA to ``k = min(dim, n_speakers - 1)`` dimensions, then WCCN.

    LDA keeps the directions that maximise between-speaker over within-speaker scatter (a generalised
    symmetric eigenproblem); WCCN then whitens the remaining within-speaker covariance, so that cosine
    scoring weighs every direction by how reliably it separates speakers (Dehak et al. 2011).
    """
    vectors = np.asarray(vectors, dtype=np.float64)
    labels = np.asarray(speakers)
    names = np.unique(labels)
    if len(names) < 2:
        raise ValueError("LDA needs at least two training speakers")
    k = min(dim, len(names) - 1, vectors.shape[1])
    centre = vectors.mean(axis=0)
    within = np.zeros((vectors.shape[1],) * 2)
    between = np.zeros_like(within)
    for name in names:
        own = vectors[labels == name]
        offset = own.mean(axis=0) - centre
        between += len(own) * np.outer(offset, offset)
        deviations = own - own.mean(axis=0)
        within += deviations.T @ deviations
    within /= len(vectors)
    between /= len(vectors)
    # A small ridge keeps the within-class scatter invertible when speakers have few utterances.
    ridge = 1e-6 * np.trace(within) / len(within) + 1e-12
    _, eigenvectors = scipy_linalg.eigh(between, within + ridge * np.eye(len(within)))
    lda = eigenvectors[:, ::-1][:, :k]
    projected = vectors @ lda
    wccn_within = np.zeros((k, k))
    for name in names:
        own = projected[labels == name]
        wccn_within += np.cov(own, rowvar=False, bias=True).reshape(k, k)
    wccn_within /= len(names)
    wccn_within += 1e-6 * np.trace(wccn_within) / k * np.eye(k) + 1e-12 * np.eye(k)
    return lda @ np.linalg.cholesky(np.linalg.inv(wccn_within))


@dataclass
class IVectorExtractor:
    """A trained UBM + T pair plus the training i-vectors' mean (and optionally an LDA + WCCN
    projection), ready to embed new utterances."""

    tv: TotalVariability
    center: np.ndarray
    projection: np.ndarray | None = None

    @classmethod
    def train(
        cls,
        utterance_frames: list[np.ndarray],
        n_components: int = 64,
        rank: int = 100,
        iterations: int = 5,
        ubm_max_frames: int | None = 200_000,
        seed: int = 0,
        speakers=None,
        lda_dim: int = 0,
    ) -> "IVectorExtractor":
        """Train the whole chain on a list of (n_frames, dim) feature arrays (one per utterance).

        With ``lda_dim > 0`` and the utterances' ``speakers``, an LDA + WCCN projection is trained on
        the (centred, length-normalised) training i-vectors as well.
        """
        if len(utterance_frames) < 2:
            raise ValueError("i-vector training needs at least two utterances")
        ubm = train_ubm(np.concatenate(utterance_frames), n_components=n_components, max_frames=ubm_max_frames, seed=seed)
        zeroth, first = baum_welch_statistics(ubm, utterance_frames)
        tv = train_total_variability(ubm, zeroth, first, rank=min(rank, ubm.n_components * ubm.dim), iterations=iterations, seed=seed)
        raw = tv.extract(zeroth, first)
        extractor = cls(tv=tv, center=raw.mean(axis=0))
        if lda_dim > 0:
            if speakers is None or len(speakers) != len(utterance_frames):
                raise ValueError("LDA needs the speaker of every training utterance")
            with single_threaded_blas():
                extractor.projection = train_lda_wccn(_length_normalise(raw - extractor.center), speakers, lda_dim)
        return extractor

    @property
    def dim(self) -> int:
        return self.tv.rank if self.projection is None else self.projection.shape[1]

    def embed(self, utterance_frames: list[np.ndarray]) -> np.ndarray:
        """Centred, length-normalised i-vectors (U, dim), float32; projected by LDA + WCCN (and
        length-normalised again) when the extractor has that projection."""
        zeroth, first = baum_welch_statistics(self.tv.ubm, utterance_frames)
        vectors = _length_normalise(self.tv.extract(zeroth, first) - self.center)
        if self.projection is not None:
            vectors = _length_normalise(vectors @ self.projection)
        return vectors.astype(np.float32)
