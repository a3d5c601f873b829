"""Training side of dsae-vc: corpora, features, the DSAE, training, export and evaluation (PyTorch)."""
