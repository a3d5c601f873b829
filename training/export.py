"""Export a trained run to a model directory: encoder.onnx + decoder.onnx with `dsae` metadata (README).

The exported graphs take and give *normalised* features; the metadata carries everything the runtime needs
to normalise, to rebuild the features (FeatureConfig) and to check sizes, so `vc/` never guesses.
Each export is checked with onnx.checker and against PyTorch on random and (when the cache is at hand)
real segments: max abs difference <= 1e-4. With `int8_lstm` the encoder's LSTM weights are then stored as
8-bit integers (ONNX Runtime's dynamic quantisation), checked against PyTorch on real segments: codes within
INT8_TOLERANCE, relative.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from training.dsae import DSAE
from training.checkpoints import WEIGHTS_NAME, latest_checkpoint, load_model, load_run_config
from training.config import TrainingError
from vc import model_format as fmt
from vc.files import atomic_write

FORMAT_VERSION = fmt.FORMAT_VERSION
OPSET = fmt.OPSET
PARITY_TOLERANCE = 1e-4
# Relative error (|onnx - torch| / |torch|, over a batch) of f and z allowed for int8 LSTM weights: measured
# 0.007-0.009 on the paper-size model, where two speakers' codes differ by about their own size.
INT8_TOLERANCE = 0.03
INT8_LSTM = {"op_types": ["LSTM"], "weights": "int8"}   # the encoder's QUANTISED_KEY entry


class ExportEncoder(nn.Module):
    """x (B, T, feature_dim) -> f_mean, f_logvar, z_mean, z_logvar: what `encoder.onnx` computes."""

    def __init__(self, model: DSAE):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model.encode(x)


class ExportDecoder(nn.Module):
    """f (B, f_dim), z (B, T, z_dim) -> x_mean (B, T, feature_dim): what `decoder.onnx` computes."""

    def __init__(self, model: DSAE):
        super().__init__()
        self.model = model

    def forward(self, f, z):
        return self.model.decode(f, z)



class ExportError(RuntimeError):
    """Export failed; the message says which file and why."""


def feature_config_of(manifest: dict) -> tuple[dict, str]:
    """The FeatureConfig dict and its hash, through vc.dsp when it is importable (it is the authority)."""
    raw = manifest["feature_config"]
    try:
        from vc.dsp import FeatureConfig
    except Exception:       # vc.dsp needs the compiled kernel; the manifest holds the same values
        return dict(raw), str(manifest.get("config_hash", ""))
    config = FeatureConfig.from_dict(raw)
    return config.to_dict(), config.hash()


def _corpus_name(corpus) -> str:
    # Early caches stored the corpus as a dict of reader options; the contract wants its name.
    if isinstance(corpus, dict):
        return str(corpus.get("name", "unknown"))
    return str(corpus) if corpus else "unknown"


def _metadata(role: str, model: DSAE, run_dir: Path, model_id: str) -> dict:
    manifest = json.loads((run_dir / "cache_manifest.json").read_text())
    mean = np.load(run_dir / "cache_mean.npy", allow_pickle=False)
    std = np.load(run_dir / "cache_std.npy", allow_pickle=False)
    feature_config, feature_hash = feature_config_of(manifest)
    c = model.config
    meta = fmt.model_metadata(
        feature_config=feature_config, feature_config_hash=feature_hash, norm_mean=mean, norm_std=std,
        f_dim=c.f_dim, z_dim=c.z_dim, hidden_dim=c.hidden_dim, variant=c.variant,
        segment_length=int(manifest.get("segment_length", 20)), corpus=_corpus_name(manifest.get("corpus")),
        model_id=model_id)
    return fmt.for_role(meta, role)


def write_model_dir(encoder: torch.nn.Module, decoder: torch.nn.Module, out_dir: Path, metadata: dict, *,
                    n_features: int, f_dim: int, z_dim: int, frames: int = 20) -> None:
    """Both graphs of a model directory, named and annotated as `vc.model_format` says: `export` writes a
    trained DSAE with it (ExportEncoder/ExportDecoder), the tests their small models."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    examples = {"encoder": (torch.zeros(2, frames, n_features),),
                "decoder": (torch.zeros(2, f_dim), torch.zeros(2, frames, z_dim))}
    for role, module, file in (("encoder", encoder, fmt.ENCODER_FILE), ("decoder", decoder, fmt.DECODER_FILE)):
        inputs, outputs = fmt.io_names(role)
        _export_onnx(module, examples[role], out_dir / file, list(inputs), list(outputs), fmt.dynamic_axes(role),
                     fmt.for_role(metadata, role))


def _export_onnx(module: torch.nn.Module, args: tuple, path: Path, input_names, output_names, dynamic_axes,
                 metadata: dict):
    import onnx
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        raw = Path(tmp) / "raw.onnx"
        with warnings.catch_warnings():
            # The legacy exporter warns that LSTMs with batch_first are exported for any batch size: intended.
            warnings.simplefilter("ignore")
            torch.onnx.export(module, args, str(raw), input_names=input_names, output_names=output_names,
                              dynamic_axes=dynamic_axes, opset_version=OPSET, do_constant_folding=True,
                              dynamo=False)
        proto = onnx.load(str(raw))
        proto.producer_name = "dsae-vc vc-export"
        onnx.helper.set_model_props(proto, {fmt.METADATA_KEY: json.dumps(metadata)})
        onnx.checker.check_model(proto, full_check=True)
    with atomic_write(path) as fh:
        fh.write(proto.SerializeToString())


def _ort_session(path: Path):
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@torch.no_grad()
def check_parity(model: DSAE, model_dir: Path, inputs: list[np.ndarray], *, encode=None, decode=None) -> float:
    """Largest |ONNX Runtime - PyTorch| over all outputs of both graphs for the given x batches; `encode` and
    `decode` are what the graphs were exported from (default: the model's own, as `export` writes them)."""
    encode, decode = encode or model.encode, decode or model.decode
    encoder, decoder = _ort_session(model_dir / fmt.ENCODER_FILE), _ort_session(model_dir / fmt.DECODER_FILE)
    worst = 0.0
    for x in inputs:
        x = np.ascontiguousarray(x, dtype=np.float32)
        expected = [t.numpy() for t in encode(torch.from_numpy(x))]
        got = encoder.run(list(fmt.ENCODER_OUTPUTS), {"x": x})
        worst = max(worst, *(float(np.max(np.abs(a - b))) for a, b in zip(expected, got)))
        f, z = expected[0], expected[2]
        x_mean = decode(torch.from_numpy(f), torch.from_numpy(z)).numpy()
        got_x = decoder.run(list(fmt.DECODER_OUTPUTS), {"f": f, "z": z})[0]
        worst = max(worst, float(np.max(np.abs(x_mean - got_x))))
    return worst


def write_int8_lstm_graph(source: Path, destination: Path) -> None:
    """A copy of the ONNX graph at `source` with its LSTM weights as int8 (ONNX Runtime's dynamic quantisation:
    activations are quantised per call, so no calibration data is needed)."""
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.disable(logging.WARNING)   # its advice to pre-process is for convolutional graphs
    try:
        quantize_dynamic(str(source), str(destination), weight_type=QuantType.QInt8, op_types_to_quantize=["LSTM"])
    finally:
        logging.disable(logging.NOTSET)


def quantise_encoder_lstms(model: DSAE, model_dir: Path, inputs: list[np.ndarray]) -> float:
    """Store encoder.onnx's LSTM weights as int8 (activations quantised per call, ONNX Runtime's
    DynamicQuantizeLSTM): the recurrences, most of the encoder's work per frame, run about 1.5x faster on a
    CPU. Returns the largest relative error of f_mean and z_mean against PyTorch over `inputs`; above
    INT8_TOLERANCE raises ExportError and leaves the float encoder in place. The encoder's metadata gains
    QUANTISED_KEY."""
    import onnx

    path = model_dir / fmt.ENCODER_FILE
    with tempfile.TemporaryDirectory(dir=model_dir) as tmp:
        quantised = Path(tmp) / "int8.onnx"
        write_int8_lstm_graph(path, quantised)
        encoder, worst = _ort_session(quantised), 0.0
        with torch.no_grad():
            for x in inputs:
                x = np.ascontiguousarray(x, dtype=np.float32)
                want = [t.numpy() for t in model.encode(torch.from_numpy(x))]
                got = encoder.run(list(fmt.ENCODER_OUTPUTS), {"x": x})
                for i in (0, 2):   # f_mean, z_mean: what a conversion uses
                    error = np.linalg.norm(got[i] - want[i]) / max(float(np.linalg.norm(want[i])), 1e-12)
                    worst = max(worst, float(error))
        if worst > INT8_TOLERANCE:
            raise ExportError(f"{path}: with int8 LSTM weights the codes differ from PyTorch's by {worst:.3g} "
                              f"relative (> {INT8_TOLERANCE}); the float encoder is kept")
        proto = onnx.load(str(quantised))
    props = {p.key: p.value for p in proto.metadata_props}
    metadata = json.loads(props[fmt.METADATA_KEY])
    metadata[fmt.QUANTISED_KEY] = INT8_LSTM
    onnx.helper.set_model_props(proto, {**props, fmt.METADATA_KEY: json.dumps(metadata)})
    with atomic_write(path) as fh:
        fh.write(proto.SerializeToString())
    return worst


def _real_segments(config_features: str, segment_length: int, n: int = 16) -> np.ndarray | None:
    try:
        from training.dataset import SegmentDataset
        for split in ("dev", "train"):
            if (Path(config_features) / split).is_dir():
                data = SegmentDataset(config_features, split)
                idx = np.linspace(0, len(data) - 1, min(n, len(data))).astype(np.int64)
                return data.batch(idx)
    except Exception:       # the cache may have moved since training; random inputs still check parity
        return None
    return None


def z_population(model: DSAE, features: str, mean: np.ndarray, std: np.ndarray, feature_config: dict,
                 n_segments: int = 4096) -> dict | None:
    """z's statistics over the speech frames (`vc.levels.speech_frame_flags`) of up to n_segments training
    segments spread over the split, for the metadata (vc.source: a source's estimate starts here)."""
    from training.dataset import SegmentDataset
    from vc.levels import speech_frame_flags
    from vc.z_statistics import RunningCodeStats
    from vc.dsp import FeatureConfig

    if not (Path(features) / "train").is_dir():
        return None
    data = SegmentDataset(features, "train")
    idx = np.linspace(0, len(data) - 1, min(n_segments, len(data))).astype(np.int64)
    x = data.batch(idx).astype(np.float32)
    speech = speech_frame_flags(x * std + mean, FeatureConfig.from_dict(feature_config))
    encoder = ExportEncoder(model).eval()
    with torch.no_grad():
        z = np.concatenate([encoder(torch.from_numpy(x[i:i + 256]))[2].numpy() for i in range(0, len(x), 256)])
    stats = RunningCodeStats(z.shape[-1])
    stats.update(z[speech])
    result = stats.estimate()
    return {"mean": result.mean.tolist(), "std": result.std.tolist(), "frames": stats.frames}


def export(run_dir: str | os.PathLike, out_dir: str | os.PathLike, *, checkpoint: str | None = None,
           model_id: str | None = None, int8_lstm: bool = False, log=print) -> dict:
    """Write encoder.onnx, decoder.onnx (and README.md) into out_dir; returns the encoder's metadata.
    int8_lstm: the encoder's LSTM weights as int8 (`quantise_encoder_lstms`)."""
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    for name in ("cache_manifest.json", "cache_mean.npy", "cache_std.npy"):
        if not (run_dir / name).is_file():
            raise ExportError(f"{run_dir / name}: no such file (is {run_dir} a vc-train run directory?)")
    try:
        config = load_run_config(run_dir)
        model, state = load_model(run_dir, checkpoint)
    except TrainingError as exc:
        raise ExportError(str(exc)) from None
    model.eval()
    ckpt = Path(checkpoint) if checkpoint else latest_checkpoint(run_dir)
    if model_id is None:
        digest = hashlib.sha256((ckpt / WEIGHTS_NAME).read_bytes()).hexdigest()[:12]
        model_id = f"{run_dir.name}-{model.config.variant}-{digest}"

    if config.data == "sprites":
        # video: its own graphs (image-shaped input and output) and metadata; no speech model card
        if int8_lstm:
            raise ExportError(f"{run_dir}: int8 LSTM weights are for speech models (the live engine); this run "
                              "is a video model")
        from training.sprites.export import export_video
        meta, worst = export_video(model, config.features, out_dir, model_id, PARITY_TOLERANCE)
        log(f"exported {model_id} to {out_dir} (parity {worst:.2e})")
        return meta
    c = model.config
    T = 20
    enc_meta = _metadata("encoder", model, run_dir, model_id)
    population = z_population(model, config.features, np.asarray(enc_meta["norm_mean"], np.float32),
                              np.asarray(enc_meta["norm_std"], np.float32), enc_meta["feature_config"])
    if population is not None:
        enc_meta[fmt.Z_POPULATION_KEY] = population
    else:
        log(f"{config.features}: no training features, so no z_population in the metadata (a source's z "
            "statistics will start from the target's)")
    write_model_dir(ExportEncoder(model), ExportDecoder(model), out_dir, enc_meta, n_features=c.feature_dim,
                    f_dim=c.f_dim, z_dim=c.z_dim, frames=T)

    rng = np.random.default_rng(0)
    inputs = [rng.normal(size=(1, T, c.feature_dim)).astype(np.float32),
              rng.normal(size=(3, 7, c.feature_dim)).astype(np.float32),
              rng.normal(size=(2, 45, c.feature_dim)).astype(np.float32)]
    real = _real_segments(config.features, enc_meta["segment_length"])
    if real is not None:
        inputs.append(real)
    worst = check_parity(model, out_dir, inputs)
    if worst > PARITY_TOLERANCE:
        raise ExportError(f"{out_dir}: ONNX Runtime differs from PyTorch by {worst:.3g} (> {PARITY_TOLERANCE})")
    int8_line = []
    if int8_lstm:
        # Judged on real speech where the cache is at hand: noise drives the gates where speech never does.
        int8_error = quantise_encoder_lstms(model, out_dir, [real] if real is not None else inputs)
        enc_meta[fmt.QUANTISED_KEY] = INT8_LSTM
        int8_line = [f"- encoder LSTM weights int8: f and z within {int8_error:.3f} of PyTorch's, relative "
                     f"({'real' if real is not None else 'random'} segments)"]

    history = state.get("history") or [{}]
    last = history[-1]
    card = [f"# DSAE model {model_id}", "",
            f"- variant: {c.variant}; f {c.f_dim}, z {c.z_dim}, hidden {c.hidden_dim}, frame MLP {c.frame_hidden}",
            f"- corpus: {enc_meta['corpus']}; feature config hash {enc_meta['feature_config_hash']}",
            f"- trained: {state.get('epoch', '?')} epochs, {state.get('global_step', '?')} steps "
            f"({run_dir.name}, checkpoint {ckpt.name})",
            f"- last dev ELBO: {last.get('val_elbo', 'n/a')} nats per segment",
            f"- options: {json.dumps({k: v for k, v in c.to_dict().items() if k not in ('feature_dim',)})}",
            f"- objective: {json.dumps(config.objective)}",
            f"- ONNX Runtime vs PyTorch max abs difference: {worst:.2e}" + (" (float weights)" if int8_lstm else ""),
            *int8_line, ""]
    with atomic_write(out_dir / "README.md", "w", encoding="utf-8") as fh:
        fh.write("\n".join(card))
    log(f"exported {model_id} to {out_dir} (parity {worst:.2e}"
        + (f", int8 LSTM codes within {int8_error:.3f} relative)" if int8_lstm else ")"))
    return enc_meta
