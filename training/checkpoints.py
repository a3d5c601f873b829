"""A run directory's files: one way each to save, load, resume and start from (init-from) a checkpoint.

    RUN/config.json                 the full configuration (training.config.TrainConfig)
    RUN/cache_manifest.json, cache_mean.npy, cache_std.npy
                                    copies from the feature cache, so that export needs only the run
    RUN/checkpoints/step-NNNNNNNNN/ model.safetensors, optimizer.pt, state.json (counters, running sums,
                                    history, model_config); each appears by one rename: whole or absent
    RUN/checkpoints/latest          name of the newest complete checkpoint (replaced atomically)

init-from also takes a model directory (`vc-export`'s output, training.model_dir): fine-tuning can start
from the shipped model when its run is not at hand.

The weights are safetensors (no pickle); optimizer.pt is read with weights_only. state.json's
model_config is the model's architecture (training.dsae.DSAEConfig); checkpoints written before the
objective moved out of it still load (training.config.split_model_options).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from training.config import TrainConfig, TrainingError, model_config_from_dict
from training.dsae import DSAE
from training.model_dir import is_model_dir, model_dir_metadata, renormalise, weights_from_model_dir
from vc import model_format as fmt
from vc.files import atomic_write

CONFIG_NAME = "config.json"
CHECKPOINTS = "checkpoints"
WEIGHTS_NAME = "model.safetensors"
OPTIMIZER_NAME = "optimizer.pt"
STATE_NAME = "state.json"


def write_text(path: Path, text: str):
    with atomic_write(path, "w", encoding="utf-8") as fh:
        fh.write(text)


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    pointer = Path(run_dir) / CHECKPOINTS / "latest"
    if not pointer.is_file():
        return None
    ckpt = pointer.parent / pointer.read_text().strip()
    return ckpt if (ckpt / WEIGHTS_NAME).is_file() else None


def load_run_config(run_dir: str | os.PathLike) -> TrainConfig:
    path = Path(run_dir) / CONFIG_NAME
    if not path.is_file():
        raise TrainingError(f"{path}: no such file (is {run_dir} a vc-train run directory?)")
    try:
        return TrainConfig.from_dict(json.loads(path.read_text()))
    except ValueError as exc:
        raise TrainingError(f"{path}: {exc}") from None


def write_run_files(run_dir: Path, config: TrainConfig, manifest: dict, mean: np.ndarray, std: np.ndarray):
    """config.json and the copies of the cache's manifest and normalisation a new run starts with."""
    write_text(run_dir / CONFIG_NAME, json.dumps(config.to_dict(), indent=2))
    write_text(run_dir / "cache_manifest.json", json.dumps(manifest, indent=2))
    np.save(run_dir / "cache_mean.npy", mean)
    np.save(run_dir / "cache_std.npy", std)


def save_checkpoint(run_dir: Path, model: DSAE, optimizer, state: dict, keep: int):
    """Write checkpoints/step-N whole (one rename), point `latest` at it, keep the newest `keep`."""
    from safetensors.torch import save_file
    ckpt_root = run_dir / CHECKPOINTS
    ckpt_root.mkdir(exist_ok=True)
    name = f"step-{state['global_step']:09d}"
    tmp = Path(tempfile.mkdtemp(dir=ckpt_root, prefix=f".{name}."))
    try:
        weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(weights, tmp / WEIGHTS_NAME)
        torch.save(optimizer.state_dict(), tmp / OPTIMIZER_NAME)
        (tmp / STATE_NAME).write_text(json.dumps(state, indent=1))
        final = ckpt_root / name
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    write_text(ckpt_root / "latest", name + "\n")
    old = sorted(p for p in ckpt_root.glob("step-*") if p.is_dir() and p.name != name)
    for stale in old[:max(0, len(old) - (keep - 1))]:
        shutil.rmtree(stale, ignore_errors=True)


def _read_weights(ckpt: Path, device="cpu") -> dict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    try:
        return load_file(ckpt / WEIGHTS_NAME, device=str(device))
    except (SafetensorError, OSError) as exc:
        raise TrainingError(f"{ckpt / WEIGHTS_NAME}: cannot read it ({exc})") from None


def _read_state(ckpt: Path) -> dict:
    try:
        return json.loads((ckpt / STATE_NAME).read_text())
    except (OSError, ValueError) as exc:
        raise TrainingError(f"{ckpt / STATE_NAME}: cannot read it ({exc})") from None


def load_model(run_dir: str | os.PathLike, checkpoint: str | os.PathLike | None = None) -> tuple[DSAE, dict]:
    """The model of a run (latest checkpoint unless one is named) and that checkpoint's state.json."""
    ckpt = Path(checkpoint) if checkpoint else latest_checkpoint(run_dir)
    if ckpt is None or not (ckpt / WEIGHTS_NAME).is_file():
        raise TrainingError(f"{run_dir}: no checkpoint with {WEIGHTS_NAME} (has training written one yet?)")
    state = _read_state(ckpt)
    try:
        model = DSAE(model_config_from_dict(state["model_config"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise TrainingError(f"{ckpt / STATE_NAME}: no usable model_config ({exc})") from None
    model.load_state_dict(_read_weights(ckpt))
    return model, state


def load_initial_weights(model: DSAE, source: str, device, *, norm=None) -> list[str]:
    """init-from: weights from a run directory (its latest checkpoint), a checkpoint directory or a model
    directory (vc-export's encoder.onnx + decoder.onnx), shapes checked; the optimiser and schedule start
    afresh. Returns the names of the weights that start as built: a model directory holds neither x's
    variance, the prior of z nor the training heads (fit them first: TrainConfig.train_only).
    norm: the run's (mean, std); a model directory's weights are rewritten for it."""
    path = Path(source)
    if is_model_dir(path):
        return _load_model_dir(model, path, device, norm)
    ckpt = latest_checkpoint(path) if (path / CHECKPOINTS).is_dir() else path
    if ckpt is None or not (ckpt / WEIGHTS_NAME).is_file():
        raise TrainingError(f"{source}: no {WEIGHTS_NAME} there (give a run directory or a checkpoint directory)")
    weights = _read_weights(ckpt, device)
    own = model.state_dict()
    # Layers that video options add (training.sprites.video: the decoder's FiLM modulations, zero at
    # initialisation, so the function is the source's; the normalisation of the frame encodings, which
    # has no weights) may be new: they start as built and fine-tuning trains around them.
    added = [k for k in own if k not in weights and _added_by_option(k)]
    misfits = _misfits(own, weights, added)
    if misfits:
        raise TrainingError(f"{ckpt / WEIGHTS_NAME}: does not fit this model ({misfits}); "
                            "the model options must match the run it came from")
    model.load_state_dict({**weights, **{k: own[k] for k in added}})
    return added


def _misfits(own: dict, weights: dict, added: list[str]) -> str:
    """The first few weights missing, misshapen or unknown to the model ('' when they fit)."""
    wrong = [k for k in own if k not in added and (k not in weights or weights[k].shape != own[k].shape)]
    wrong += [k for k in weights if k not in own]
    return ", ".join(wrong[:3]) + (" ..." if len(wrong) > 3 else "")


# What vc-export leaves out of a model directory: x's variance, the prior of z, the training heads.
NOT_EXPORTED = ("x_logvar", "prior_lstm.", "prior_out.", "speaker_adversary.", "content_head.")


def _load_model_dir(model: DSAE, path: Path, device, norm) -> list[str]:
    meta = model_dir_metadata(path)
    weights = weights_from_model_dir(path)
    own = model.state_dict()
    added = [k for k in own if k not in weights and k.startswith(NOT_EXPORTED)]
    misfits = _misfits(own, weights, added)
    if misfits:
        c = model.config
        raise TrainingError(f"{path}: does not fit this model ({misfits}); it has f_dim {meta.get('f_dim')}, z_dim "
                            f"{meta.get('z_dim')}, hidden_dim {meta.get('hidden_dim')}, variant {meta.get('variant')} "
                            f"(this run: {c.f_dim}, {c.z_dim}, {c.hidden_dim}, {c.variant})")
    model.load_state_dict({**own, **weights})
    error = graph_parity(model, path, segment_length=int(meta["segment_length"]))
    if error > GRAPH_TOLERANCE:
        raise TrainingError(f"{path}: its weights, read back, compute something else than its graphs "
                            f"(max difference {error:.2g}); export it again with this version's vc-export")
    same = norm is None or all(np.array_equal(np.asarray(a, np.float32), np.asarray(b, np.float32)) for a, b in
                               zip(norm, (meta["norm_mean"], meta["norm_std"])))
    if not same:
        weights = renormalise(weights, model_mean=meta["norm_mean"], model_std=meta["norm_std"],
                              mean=norm[0], std=norm[1])
        model.load_state_dict({**own, **weights})
    model.to(device)
    return added


GRAPH_TOLERANCE = 1e-4


def graph_parity(model: DSAE, path: Path, *, segments: int = 4, segment_length: int = 20) -> float:
    """Largest difference between the model and a model directory's graphs on random normalised segments."""
    import onnxruntime as ort
    rng = np.random.default_rng(0)
    x = rng.standard_normal((segments, segment_length, model.config.feature_dim)).astype(np.float32)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    enc, dec = (ort.InferenceSession(str(path / name), options, providers=["CPUExecutionProvider"])
                for name in (fmt.ENCODER_FILE, fmt.DECODER_FILE))
    codes = enc.run(None, {"x": x})
    model = model.cpu().eval()
    with torch.no_grad():
        mine = model.encode(torch.from_numpy(x))
        decoded = model.decode(mine[0], mine[2]).numpy()
    out = dec.run(None, {"f": codes[0], "z": codes[2]})[0]
    model.train()
    return max([float(np.abs(a - b.numpy()).max()) for a, b in zip(codes, mine)] + [float(np.abs(out - decoded).max())])


def _added_by_option(key: str) -> bool:
    return key.startswith("frame_decoder.film.") or key.startswith("frame_encoder.out.1.")


def resume_from_checkpoint(run_dir: Path, model: DSAE, optimizer, device) -> tuple[dict, Path]:
    """Load the latest checkpoint's weights and optimiser into place; (its state.json, its path)."""
    ckpt = latest_checkpoint(run_dir)
    if ckpt is None:
        raise TrainingError(f"{run_dir}: --resume, but no checkpoint has been written yet")
    model.load_state_dict(_read_weights(ckpt, device))
    optimizer.load_state_dict(torch.load(ckpt / OPTIMIZER_NAME, map_location=device, weights_only=True))
    return _read_state(ckpt), ckpt
