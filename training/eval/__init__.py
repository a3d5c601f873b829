"""Speaker verification as a test of disentanglement (vc-eer); the stable import path is training.eer.

    metrics     EER, minDCF, operating points, cosine scores (EvaluationError)
    trials      all-pairs trials, trial lists, the keys a trial list may use
    embeddings  utterance-level f and z from the model's segments
    baselines   MFCC-mean and i-vector baselines on the same frames
    sources     the utterances of a corpus split or a feature-cache split
    plots       DET curves and PCA scatters
    driver      `evaluate` (one feature pass, every embedding, one report) and `format_table`
"""
