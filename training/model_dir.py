"""A model directory's weights as a DSAE state dict: fine-tuning can start from `models/default` itself.

`vc-export` keeps what inference needs (the encoder and the decoder); the weights are all in the two graphs,
in ONNX's layout. This reads them back into PyTorch's:

    Linear       MatMul by W.T (+ an Add of the bias that keeps its name), or Gemm with the names kept
    LSTM / RNN   W (directions, gates x H, in), R, B = [input bias, hidden bias]; ONNX's gates are
                 ordered i, o, f, c where PyTorch's are i, f, g, o

The exporter names every node after its module (`/f_lstm/LSTM`), which is how each tensor finds its
parameter. What the graphs never held (x's learned variance, the prior LSTM of z, the training heads)
is listed, so that the trainer can start those as built and fit them first (TrainConfig.train_only).

The features a model reads are normalised with its own statistics (the metadata). A run's cache may have
others (another corpus, or the same one rebuilt); `renormalise` rewrites the frame encoder's first layer
and the frame decoder's last so that the model computes the same function on the cache's normalisation.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from training.config import TrainingError
from vc import model_format as fmt

# ONNX LSTM gate blocks (i, o, f, c) taken in PyTorch's order (i, f, g, o).
_LSTM_GATES_TO_TORCH = (0, 2, 3, 1)


def is_model_dir(path: str | Path) -> bool:
    path = Path(path)
    return (path / fmt.ENCODER_FILE).is_file() and (path / fmt.DECODER_FILE).is_file()


def model_dir_metadata(path: str | Path) -> dict:
    """The `dsae` metadata of the encoder graph (vc.model_format)."""
    import onnx
    file = Path(path) / fmt.ENCODER_FILE
    proto = onnx.load(str(file), load_external_data=False)
    props = {p.key: p.value for p in proto.metadata_props}
    if fmt.METADATA_KEY not in props:
        raise TrainingError(f"{file}: no '{fmt.METADATA_KEY}' metadata (not written by vc-export)")
    return json.loads(props[fmt.METADATA_KEY])


def _module_of(node) -> str:
    """'f_lstm' for a node named '/f_lstm/LSTM' (its outputs are named after it when the node is not)."""
    name = node.name or node.output[0]
    return ".".join(name.split("/")[1:-1])


def _lstm_blocks(a: np.ndarray, hidden: int) -> np.ndarray:
    """Reorder the gate blocks of the first axis of one direction's tensor from ONNX's to PyTorch's."""
    blocks = a.reshape(4, hidden, *a.shape[1:])
    return blocks[list(_LSTM_GATES_TO_TORCH)].reshape(a.shape)


def _recurrent(node, init: dict, gates: int) -> dict:
    """PyTorch's parameters of one LSTM (gates 4) or RNN (gates 1) node: W, R, B per direction."""
    module = _module_of(node)
    w, r, b = (init[name] for name in node.input[1:4])
    hidden = r.shape[-1]
    params = {}
    for d in range(w.shape[0]):
        suffix = "_l0" + ("_reverse" if d == 1 else "")
        wd, rd = w[d], r[d]
        bi, bh = b[d][:gates * hidden], b[d][gates * hidden:]
        if gates == 4:
            wd, rd, bi, bh = (_lstm_blocks(a, hidden) for a in (wd, rd, bi, bh))
        params.update({f"{module}.weight_ih{suffix}": wd, f"{module}.weight_hh{suffix}": rd,
                       f"{module}.bias_ih{suffix}": bi, f"{module}.bias_hh{suffix}": bh})
    return params


def _graph_weights(file: Path) -> dict:
    import onnx
    from onnx import numpy_helper
    proto = onnx.load(str(file))
    if any(n.domain == "com.microsoft" for n in proto.graph.node):
        raise TrainingError(f"{file}: holds quantised weights (vc-export --int8-lstm); start from a float export")
    init = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    producer = {out: node for node in proto.graph.node for out in node.output}
    params = {name[len("model."):]: a for name, a in init.items() if name.startswith("model.")}
    for node in proto.graph.node:
        if node.op_type == "LSTM":
            params.update(_recurrent(node, init, 4))
        elif node.op_type == "RNN":
            params.update(_recurrent(node, init, 1))
        elif node.op_type == "Add":
            # Linear = MatMul by W.T, then this Add of the bias, which keeps the module's name
            bias = [i for i in node.input if i.startswith("model.") and i.endswith(".bias")]
            other = [producer.get(i) for i in node.input if i not in bias]
            if len(bias) == 1 and len(other) == 1 and other[0] is not None and other[0].op_type == "MatMul":
                weight = other[0].input[1]
                if weight in init:
                    params[bias[0][len("model."):-len(".bias")] + ".weight"] = init[weight].T
        elif node.op_type == "Gemm":
            attrs = {a.name: a.i for a in node.attribute}
            if node.input[1] in init and not node.input[1].startswith("model."):
                w = init[node.input[1]]
                params[_module_of(node) + ".weight"] = w if attrs.get("transB", 0) else w.T
    return params


def weights_from_model_dir(path: str | Path) -> dict[str, torch.Tensor]:
    """Every weight the model directory's two graphs hold, named and shaped as DSAE.state_dict's."""
    path = Path(path)
    if not is_model_dir(path):
        raise TrainingError(f"{path}: not a model directory (needs {fmt.ENCODER_FILE} and {fmt.DECODER_FILE})")
    weights = {}
    for file in (path / fmt.ENCODER_FILE, path / fmt.DECODER_FILE):
        try:
            weights.update(_graph_weights(file))
        except (OSError, ValueError) as exc:
            raise TrainingError(f"{file}: cannot read it ({exc})") from None
    return {k: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in weights.items()}


def renormalise(weights: dict, *, model_mean, model_std, mean, std) -> dict:
    """The same function on features normalised by (mean, std) instead of the model's own statistics.

    The frame encoder read (raw - m0) / s0 = x * s1/s0 + (m1 - m0)/s0 for the cache's x = (raw - m1) / s1;
    the decoder's output goes the other way. Both layers are affine, so this is exact.
    """
    m0, s0, m1, s1 = (torch.as_tensor(np.asarray(a, dtype=np.float32)) for a in (model_mean, model_std, mean, std))
    w = dict(weights)
    first, last = "frame_encoder.net.0", "frame_decoder.net.4"
    if f"{first}.weight" not in w or f"{last}.weight" not in w:
        raise TrainingError("renormalising needs the speech frame coder (frame_encoder.net.0, frame_decoder.net.4)")
    w_in = w[f"{first}.weight"]
    w[f"{first}.bias"] = w[f"{first}.bias"] + w_in @ ((m1 - m0) / s0)
    w[f"{first}.weight"] = w_in * (s1 / s0)[None, :]
    w[f"{last}.weight"] = w[f"{last}.weight"] * (s0 / s1)[:, None]
    w[f"{last}.bias"] = (w[f"{last}.bias"] * s0 + m0 - m1) / s1
    return w
