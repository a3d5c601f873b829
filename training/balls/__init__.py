"""The DSAE on bouncing-ball videos (training.data.balls): the paper's stochastic-versus-deterministic
dynamics experiment. `data`: the cache as a training set and the model's defaults (`vc-train --data balls`);
`predict`: missing-frame prediction scored by the fraction of incorrect pixels (tools/eval_dynamics.py).
"""
