"""The vc-eer evaluation: one feature pass over a split feeds every embedding, scored on the same trials.

FHVAE runs given with ``fhvae`` (training.eval.fhvae) add two embeddings each, ``NAME_z2`` and ``NAME_z1``
(``fhvae_z2``, ``fhvae_z1`` for the first), made and scored like f and z.

Utterances too short for one model segment are left out of every embedding alike, so all embeddings are
scored on the same trials (and counted under ``skipped``).
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from training.eval.baselines import (IVectorOptions, ivector_features, mfcc_from_log_magnitude,
                                     mfcc_mean_embedding, train_and_embed_ivectors)
from training.eval.embeddings import model_embeddings
from training.eval.fhvae import load_fhvae_models, parse_fhvae_entries
from training.eval.metrics import EvaluationError, cosine_scores, equal_error_rate, min_dcf, operating_points
from training.eval.plots import plot_det, plot_pca
from training.eval.sources import open_data
from training.eval.trials import all_pairs_trials, keys_for, read_trial_list

EMBEDDINGS = ("f", "z", "mfcc", "ivector")
DEFAULT_SEGMENT_LENGTH = 20
# Utterances whose segments go through the encoder together (bounds the memory of large test sets).
_ENCODE_CHUNK = 64


def evaluate(
    data: os.PathLike | str,
    model_dir: os.PathLike | str | None = None,
    split: str | None = None,
    embeddings: Sequence[str] = EMBEDDINGS,
    trials: str = "all-pairs",
    mc: int = 0,
    plot: os.PathLike | str | None = None,
    scatter: os.PathLike | str | None = None,
    train_split: str = "train",
    ivector: IVectorOptions | None = None,
    p_target: float = 0.01,
    device: str = "auto",
    segment_hop: int | None = None,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
    *,
    fhvae: Sequence[str] = (),
) -> dict:
    """Run the speaker-verification evaluation and return a JSON-ready dict (see ``vc-eer --help``).

    ``model_dir`` None means the default model ($VC_MODEL, else models/default). ``data`` is a corpus
    directory (any layout :func:`training.data.corpora.open_corpus` reads) or a
    feature cache. Utterances too short for one model segment are skipped for every embedding (so all
    embeddings are scored on the same trials) and counted under ``skipped``. ``fhvae``: FHVAE run
    directories (``RUN_DIR`` or ``NAME=RUN_DIR``, see training.eval.fhvae), scored in addition to
    ``embeddings``.
    """
    from training.ivector import single_threaded_blas

    # The numpy work is per utterance, on small matrices: one BLAS thread is fastest (see
    # training.ivector.single_threaded_blas). ONNX Runtime keeps its own threads.
    with single_threaded_blas():
        return _evaluate(data, model_dir, split, embeddings, trials, mc, plot, scatter, train_split, ivector,
                         p_target, device, segment_hop, seed, log, fhvae)


def _evaluate(data, model_dir, split, embeddings, trials, mc, plot, scatter, train_split, ivector, p_target, device,
              segment_hop, seed, log, fhvae) -> dict:
    started = time.time()
    log = log or (lambda message: None)
    embeddings = _check_options(embeddings, mc, p_target, trials, fhvae=bool(fhvae))
    ivector = ivector or IVectorOptions()
    data = Path(data)
    if not data.is_dir():
        raise EvaluationError(f"{data}: no such directory")

    model = _load_model(model_dir, device, log) if "f" in embeddings or "z" in embeddings else None
    fhvae_models = load_fhvae_models(parse_fhvae_entries(fhvae), log) if fhvae else {}
    feature_config, segment_length = _shared_framing(model, fhvae_models)
    open_split, description, split = open_data(data, split, feature_config)
    source = open_split(split)
    if feature_config is None:
        feature_config = source.feature_config
    if not source.items:
        raise EvaluationError(f"{data}: split {split!r} has no utterances")

    found = _featurise(source, model, embeddings, segment_length, feature_config, ivector, mc, segment_hop, seed,
                       fhvae_models)
    log(f"{description}, split {split}: {len(found.kept)} utterances, {len(found.too_short)} skipped as shorter "
        f"than one segment ({segment_length} frames)")
    kept = np.asarray(found.kept, dtype=np.int64)
    speakers = [source.items[i].speaker for i in kept]
    if len(set(speakers)) < 2:
        raise EvaluationError(f"{data}: split {split!r} needs at least two speakers with usable utterances")
    first, second, is_target, dropped_trials, protocol = _trials(trials, source, kept, speakers)

    vectors, scoring = _embedding_vectors(found, embeddings, mc)
    embeddings = embeddings + _fhvae_vectors(found, fhvae_models, vectors, scoring)
    if "ivector" in embeddings:
        if train_split == split:
            log(f"warning: the i-vector baseline is trained on the evaluated split {split!r} itself")
        vectors["ivector"] = train_and_embed_ivectors(open_split, train_split, segment_length, feature_config,
                                                      ivector, found.ivector_inputs, seed, log)
        scoring["ivector"] = "cosine of length-normalised i-vectors centred on the training mean" + (
            ", LDA + WCCN trained on the training speakers" if ivector.lda_dim > 0 else "")
    results, curves = _score(vectors, scoring, embeddings, first, second, is_target, p_target)

    report = {
        "data": str(data),
        "source": description,
        "split": split,
        "model": str(model.model_dir) if model is not None else None,
        "model_id": model.model_id if model is not None else None,
        "protocol": protocol,
        "utterances": int(len(kept)),
        "speakers": len(set(speakers)),
        "skipped": {"too_short": len(found.too_short), "too_short_utterances": found.too_short[:50],
                    "by_feature_cache": int(getattr(source, "skipped_by_cache", 0)),
                    "trials_with_skipped_utterances": int(dropped_trials)},
        "trials": int(len(first)),
        "target_trials": int(is_target.sum()),
        "nontarget_trials": int((~is_target).sum()),
        "p_target": p_target,
        "mc": mc,
        "results": results,
    }
    for row in results:
        report[f"eer_{row['embedding']}"] = row["eer"]
        report[f"min_dcf_{row['embedding']}"] = row["min_dcf"]
    if "ivector" in embeddings:
        report["ivector_options"] = asdict(ivector)
    if fhvae_models:
        report["fhvae_models"] = {name: {"run": str(m.run_dir), "alpha": m.alpha, "step": m.step}
                                  for name, m in fhvae_models.items()}
    _plot(report, curves, vectors, speakers, plot, scatter, f"{description}, split {split}")
    report["seconds"] = round(time.time() - started, 2)
    return report


def _check_options(embeddings, mc: int, p_target: float, trials: str, *, fhvae: bool = False) -> list[str]:
    embeddings = list(dict.fromkeys(embeddings))
    unknown = [e for e in embeddings if e not in EMBEDDINGS]
    if unknown or not (embeddings or fhvae):
        raise EvaluationError(f"embeddings must be among {', '.join(EMBEDDINGS)}, got {embeddings}")
    if mc < 0:
        raise EvaluationError(f"--mc must be >= 0, got {mc}")
    if not 0.0 < p_target < 1.0:
        raise EvaluationError(f"p_target must be in (0, 1), got {p_target}")
    if trials != "all-pairs" and not Path(trials).is_file():
        raise EvaluationError(f"{trials}: trial list not found (or use 'all-pairs')")
    return embeddings


def _shared_framing(model, fhvae_models: dict):
    """(feature config or None, segment length) that the DSAE and every FHVAE agree on."""
    framings = ([("the model", model.feature_config, int(model.segment_length))] if model is not None else [])
    framings += [(f"--fhvae {name}", m.feature_config, m.segment_length) for name, m in fhvae_models.items()]
    if not framings:
        return None, DEFAULT_SEGMENT_LENGTH
    first, config, length = framings[0]
    for who, other_config, other_length in framings[1:]:
        if other_config.hash() != config.hash() or other_length != length:
            raise EvaluationError(f"{who} was trained on other features than {first} (feature config "
                                  f"{other_config.hash()} / {other_length} frames vs {config.hash()} / {length})")
    return config, length


def _load_model(model_dir, device: str, log):
    from vc.model import ModelError, load_model

    try:
        model = load_model(model_dir, device=device)
    except ModelError as exc:
        raise EvaluationError(str(exc)) from None
    log(model.describe())
    return model


@dataclass
class _Features:
    """What one pass over the evaluated split gives each embedding (indices into the split's items)."""
    kept: list = field(default_factory=list)
    too_short: list = field(default_factory=list)
    mfcc_means: list = field(default_factory=list)
    ivector_inputs: list = field(default_factory=list)
    f_parts: list = field(default_factory=list)
    z_parts: list = field(default_factory=list)
    fhvae_parts: dict = field(default_factory=dict)   # name -> [(z2 part, z1 part), ...]


def _featurise(source, model, embeddings, segment_length: int, feature_config, ivector: IVectorOptions, mc: int,
               segment_hop, seed: int, fhvae_models: dict) -> _Features:
    """One feature pass over the split; the models see the utterances in chunks, so memory stays bounded."""
    found, pending = _Features(), []
    rng = np.random.default_rng(seed)
    encoders = ([model] if model is not None else []) + list(fhvae_models.values())

    def encode_pending():
        if pending and model is not None:
            f_part, z_part = model_embeddings(model, pending, mc=mc, segment_hop=segment_hop, seed=rng)
            found.f_parts.append(f_part)
            found.z_parts.append(z_part)
        for name, fhvae in fhvae_models.items():
            if pending:   # posterior means only: the FHVAE's z2 and z1 are made like f without --mc
                found.fhvae_parts.setdefault(name, []).append(model_embeddings(fhvae, pending, segment_hop=segment_hop))
        pending.clear()

    for index, item in enumerate(source.items):
        frames = source.frames(index)
        if len(frames) < segment_length:
            found.too_short.append(f"{item.speaker}/{item.utterance}")
            continue
        found.kept.append(index)
        if encoders:
            pending.append(frames)
            if len(pending) >= _ENCODE_CHUNK:
                encode_pending()
        if "mfcc" in embeddings or "ivector" in embeddings:
            mfcc, energy = mfcc_from_log_magnitude(frames, feature_config, n_mfcc=ivector.n_mfcc)
            if "mfcc" in embeddings:
                found.mfcc_means.append(mfcc_mean_embedding(mfcc, energy))
            if "ivector" in embeddings:
                found.ivector_inputs.append(ivector_features(mfcc, energy, cmn=ivector.cmn))
    encode_pending()
    return found


def _trials(trials: str, source, kept: np.ndarray, speakers: list[str]):
    """(first, second, is_target, trials dropped for skipped utterances, protocol name)."""
    if trials == "all-pairs":
        first, second, is_target = all_pairs_trials(speakers)
        dropped, protocol = 0, "all-pairs"
    else:
        first, second, is_target, dropped = read_trial_list(trials, keys_for(source.items, kept), speakers)
        protocol = str(trials)
    if is_target.all() or not is_target.any():
        raise EvaluationError("the trials need both target (same-speaker) and non-target pairs")
    return first, second, is_target, dropped, protocol


def _embedding_vectors(found: _Features, embeddings, mc: int) -> tuple[dict, dict]:
    """The f, z and MFCC-mean vectors per kept utterance, and how each is scored."""
    vectors: dict[str, np.ndarray] = {}
    scoring: dict[str, str] = {}
    if found.f_parts:
        if "f" in embeddings:
            vectors["f"] = np.concatenate(found.f_parts)
            scoring["f"] = "cosine" + (f", f = mean of {mc} posterior samples per segment" if mc else "")
        if "z" in embeddings:
            vectors["z"] = np.concatenate(found.z_parts)
            scoring["z"] = "cosine"
    if "mfcc" in embeddings:
        means = np.asarray(found.mfcc_means)
        # Every MFCC mean shares a large common component (the average spectral tilt), which would
        # swamp cosine similarity; removing the evaluated set's mean uses no speaker labels.
        vectors["mfcc"] = (means - means.mean(axis=0)).astype(np.float32)
        scoring["mfcc"] = "cosine after removing the mean over evaluated utterances"
    return vectors, scoring


def _fhvae_vectors(found: _Features, fhvae_models: dict, vectors: dict, scoring: dict) -> list[str]:
    """NAME_z2 and NAME_z1 of every FHVAE (into vectors and scoring); their embedding names."""
    names = []
    for name, encoder in fhvae_models.items():
        parts = found.fhvae_parts.get(name, [])
        for index, latent in enumerate(("z2", "z1")):
            vectors[f"{name}_{latent}"] = np.concatenate([part[index] for part in parts])
            scoring[f"{name}_{latent}"] = (f"cosine, mean over segments of the posterior mean of {latent} "
                                           f"(FHVAE alpha {encoder.alpha:g})")
            names.append(f"{name}_{latent}")
    return names


def _score(vectors: dict, scoring: dict, embeddings, first, second, is_target, p_target: float):
    """One results row per embedding (EER, minDCF, threshold) and its DET curve."""
    results, curves = [], {}
    for name in embeddings:
        scores = cosine_scores(vectors[name], first, second)
        target_scores, nontarget_scores = scores[is_target], scores[~is_target]
        eer, eer_threshold = equal_error_rate(target_scores, nontarget_scores)
        dcf, _ = min_dcf(target_scores, nontarget_scores, p_target=p_target)
        results.append({"embedding": name, "dim": int(vectors[name].shape[1]), "eer": eer, "min_dcf": dcf,
                        "eer_threshold": eer_threshold, "trials": int(len(scores)), "scoring": scoring[name]})
        p_fa, p_miss, _ = operating_points(target_scores, nontarget_scores)
        curves[name] = (p_fa, p_miss, eer)
    return results, curves


def _plot(report: dict, curves: dict, vectors: dict, speakers: list[str], plot, scatter, where: str):
    """The DET plot and (beside it unless placed elsewhere) the PCA scatter of f; their paths go in the report."""
    if plot is not None:
        plot_det(curves, plot, title=f"DET: {where}, {report['trials']} trials")
        report["plot"] = str(plot)
        if scatter is None and "f" in vectors:
            plot_path = Path(plot)
            scatter = plot_path.with_name(f"{plot_path.stem}-f-pca{plot_path.suffix or '.png'}")
    if scatter is not None:
        name = "f" if "f" in vectors else next(iter(vectors))
        plot_pca(vectors[name], speakers, scatter, title=f"PCA of {name} embeddings by speaker ({report['split']})")
        report["scatter"] = str(scatter)


def format_table(report: dict) -> str:
    """The results as a fixed-width table, with the trial counts underneath."""
    lines = [f"{'embedding':<12} {'dim':>5} {'EER %':>8} {'minDCF':>8} {'trials':>9}"]
    for row in report["results"]:
        lines.append(f"{row['embedding']:<12} {row['dim']:>5} {100 * row['eer']:>8.2f} {row['min_dcf']:>8.4f} "
                     f"{row['trials']:>9}")
    lines.append(
        f"{report['source']}, split {report['split']}: {report['utterances']} utterances of {report['speakers']} "
        f"speakers ({report['skipped']['too_short']} skipped as too short); {report['target_trials']} target / "
        f"{report['nontarget_trials']} non-target trials ({report['protocol']}); minDCF at p_target "
        f"{report['p_target']:g}"
    )
    return "\n".join(lines)
