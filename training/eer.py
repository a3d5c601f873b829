"""Speaker verification as a test of disentanglement: EER, minDCF, DET curves, and the evaluation driver.

The static code ``f`` of a good DSAE identifies the speaker (low equal error rate); the dynamic codes
``z`` should not (EER near 50 %). :func:`evaluate` scores every pair of test utterances (or a trial
list) by cosine similarity with up to four embeddings on the same trials:

* ``f``: mean over the utterance's 200 ms segments of the posterior mean of f (or, with ``mc=N``, of the
  mean of N posterior samples: the paper's Monte-Carlo estimate);
* ``z``: mean over segments and frames of the posterior mean of z;
* ``mfcc``: mean MFCC vector over the voiced frames (c0 left out: it measures loudness, not voice),
  scored after removing the mean over the evaluated utterances (no labels used);
* ``ivector``: a GMM-UBM / total-variability i-vector system (:mod:`training.ivector`) on MFCCs with
  deltas, trained on the training split only, centred and length-normalised, scored by cosine (the
  protocol of the DSAE papers); ``IVectorOptions.lda_dim > 0`` adds LDA + WCCN fitted on the training
  speakers, a stronger back-end reported beside it in the README.

Too-short utterances (less than one model segment) are left out of every embedding alike, so all
embeddings are scored on the same trials.

The metrics are exact on the empirical ROC: the EER is where the miss and false-alarm rates cross,
interpolated linearly between the two adjacent operating points, not read off a threshold grid.

This module is the stable import path; the code lives in the package training.eval (metrics, trials,
embeddings, baselines, sources, plots, driver).
"""

from __future__ import annotations

from training.eval.baselines import (IVectorOptions, ivector_features, mfcc_from_log_magnitude,
                                     mfcc_mean_embedding, voiced_frames)
from training.eval.driver import EMBEDDINGS, evaluate, format_table
from training.eval.embeddings import model_embeddings, segment_starts
from training.eval.metrics import EvaluationError, cosine_scores, equal_error_rate, min_dcf, operating_points
from training.eval.plots import plot_det, plot_pca
from training.eval.trials import all_pairs_trials, read_trial_list

__all__ = [
    "EMBEDDINGS",
    "EvaluationError",
    "IVectorOptions",
    "operating_points",
    "equal_error_rate",
    "min_dcf",
    "cosine_scores",
    "all_pairs_trials",
    "read_trial_list",
    "segment_starts",
    "model_embeddings",
    "mfcc_from_log_magnitude",
    "voiced_frames",
    "mfcc_mean_embedding",
    "ivector_features",
    "plot_det",
    "plot_pca",
    "evaluate",
    "format_table",
]
