"""The model directory format, named once: what `vc-export` (training/export.py) writes, what `vc.model`
reads and what the tests build (README, "Model directory").

A model directory holds ENCODER_FILE and DECODER_FILE. Each graph carries the metadata property
METADATA_KEY, a JSON object with REQUIRED_KEYS; all but "role" are the same in both files.
"""

from __future__ import annotations

FORMAT_VERSION = 1                  # what vc-export writes
SUPPORTED_FORMAT_VERSIONS = (1,)    # what vc.model reads
METADATA_KEY = "dsae"
OPSET = 17
ENCODER_FILE = "encoder.onnx"
DECODER_FILE = "decoder.onnx"
ROLES = ("encoder", "decoder")
VARIANTS = ("full", "factorised")

ENCODER_INPUTS = ("x",)                                       # (batch, T, n_features), normalised
ENCODER_OUTPUTS = ("f_mean", "f_logvar", "z_mean", "z_logvar")  # (batch, f_dim) x2, (batch, T, z_dim) x2
DECODER_INPUTS = ("f", "z")                                   # (batch, f_dim), (batch, T, z_dim)
DECODER_OUTPUTS = ("x_mean",)                                 # (batch, T, n_features), normalised

REQUIRED_KEYS = (
    "format_version", "role", "feature_config", "feature_config_hash", "norm_mean", "norm_std",
    "f_dim", "z_dim", "hidden_dim", "variant", "segment_length", "corpus", "model_id",
)
# Keys that describe the model as a whole, so encoder and decoder must agree on them.
SHARED_KEYS = tuple(k for k in REQUIRED_KEYS if k != "role")
# Optional: {"mean": [z_dim floats], "std": [z_dim floats], "frames": n}, z's statistics over the speech
# frames of training segments (vc.z_statistics: where a source's estimate starts before it has spoken).
Z_POPULATION_KEY = "z_population"
# Optional, encoder only: {"op_types": ["LSTM"], "weights": "int8"} when vc-export --int8-lstm stored those
# weights as 8-bit integers (the graph then holds com.microsoft DynamicQuantizeLSTM nodes, CPU kernels).
QUANTISED_KEY = "quantised"

_TIME_SERIES = {"x", "z", "z_mean", "z_logvar", "x_mean"}  # names with a time axis


def dynamic_axes(role: str) -> dict:
    """torch.onnx.export's dynamic_axes for one graph: batch everywhere, T on the time series."""
    names = ENCODER_INPUTS + ENCODER_OUTPUTS if role == "encoder" else DECODER_INPUTS + DECODER_OUTPUTS
    return {name: ({0: "batch", 1: "T"} if name in _TIME_SERIES else {0: "batch"}) for name in names}


def io_names(role: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(input names, output names) of the encoder or the decoder."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, not {role!r}")
    return (ENCODER_INPUTS, ENCODER_OUTPUTS) if role == "encoder" else (DECODER_INPUTS, DECODER_OUTPUTS)


def model_metadata(*, feature_config: dict, feature_config_hash: str, norm_mean, norm_std, f_dim: int, z_dim: int,
                   hidden_dim: int, variant: str, segment_length: int, corpus: str, model_id: str) -> dict:
    """The metadata both files share (add "role" per file with `for_role`)."""
    return {
        "format_version": FORMAT_VERSION,
        "feature_config": dict(feature_config),
        "feature_config_hash": str(feature_config_hash),
        "norm_mean": [float(v) for v in norm_mean],
        "norm_std": [float(v) for v in norm_std],
        "f_dim": int(f_dim),
        "z_dim": int(z_dim),
        "hidden_dim": int(hidden_dim),
        "variant": str(variant),
        "segment_length": int(segment_length),
        "corpus": str(corpus),
        "model_id": str(model_id),
    }


def for_role(metadata: dict, role: str) -> dict:
    io_names(role)  # checks the role
    return {**metadata, "role": role}
