"""Load a DSAE model directory (encoder.onnx, decoder.onnx) and run it with ONNX Runtime.

Everything the runtime needs (feature configuration, normalisation, code sizes, segment length) is read
from the `dsae` metadata JSON that `vc-export` writes into both files; nothing is guessed.
"""

from __future__ import annotations

import ctypes
import json
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort

from vc.phones import PhonesError, open_recogniser
from vc.z_statistics import CodeStats
from vc.model_format import (DECODER_FILE, DECODER_INPUTS, DECODER_OUTPUTS, ENCODER_FILE, ENCODER_INPUTS,
                             ENCODER_OUTPUTS, METADATA_KEY, REQUIRED_KEYS, SHARED_KEYS, SUPPORTED_FORMAT_VERSIONS,
                             VARIANTS, QUANTISED_KEY, Z_POPULATION_KEY)

DEVICES = ("auto", "cpu", "cuda")
CPU_PROVIDER = "CPUExecutionProvider"
CUDA_PROVIDER = "CUDAExecutionProvider"
REPO_ROOT = Path(__file__).resolve().parent.parent


class ModelError(ValueError):
    """A model directory that cannot be used, or a device that cannot run it; the message says why."""


def default_model_dir() -> Path:
    """$VC_MODEL when set, else the repository's models/default."""
    env = os.environ.get("VC_MODEL")
    return Path(env) if env else REPO_ROOT / "models" / "default"


def default_threads() -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(4, cores))


def _ort_package() -> str:
    """Which onnxruntime distribution is installed, for error messages."""
    from importlib import metadata

    for name in ("onnxruntime-gpu", "onnxruntime"):
        try:
            return f"{name} {metadata.version(name)}"
        except metadata.PackageNotFoundError:
            continue
    return f"onnxruntime {ort.__version__}"


def cuda_unavailable_reason() -> str | None:
    """None when the CUDA provider can be loaded, else a one-line reason.

    onnxruntime-gpu only logs (and then silently uses the CPU) when CUDA or cuDNN libraries are missing,
    so the provider library is loaded here first: the dynamic loader's message names the missing library.
    """
    if CUDA_PROVIDER not in ort.get_available_providers():
        return (f"{_ort_package()} has no CUDA provider (CPU-only build); install onnxruntime-gpu "
                "in place of onnxruntime")
    capi = Path(ort.__file__).resolve().parent / "capi"
    shared = capi / "libonnxruntime_providers_shared.so"
    cuda = capi / "libonnxruntime_providers_cuda.so"
    if not cuda.exists():  # not a Linux wheel layout; let session creation decide
        return None
    try:
        if hasattr(ort, "preload_dlls"):  # loads CUDA/cuDNN from pip's nvidia-* wheels when present
            import contextlib
            import io

            try:
                with contextlib.redirect_stdout(io.StringIO()):  # it prints its warnings
                    ort.preload_dlls()
            except Exception:  # noqa: BLE001 - a failed preload is diagnosed by the load below
                pass
        if shared.exists():
            ctypes.CDLL(str(shared), mode=ctypes.RTLD_GLOBAL)
        ctypes.CDLL(str(cuda))
    except OSError as exc:
        return f"the CUDA provider cannot load its libraries (CUDA 12 / cuDNN 9 missing?): {exc}"
    return None


def _driver_problem() -> str | None:
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return "no NVIDIA driver: libcuda.so.1 not found"
    return None


def _read_metadata(session: ort.InferenceSession, path: Path) -> dict:
    custom = session.get_modelmeta().custom_metadata_map
    key = METADATA_KEY
    if key not in custom:
        raise ModelError(f"{path}: no '{key}' metadata property (not exported by vc-export?)")
    try:
        meta = json.loads(custom[key])
    except json.JSONDecodeError as exc:
        raise ModelError(f"{path}: '{key}' metadata is not valid JSON: {exc}") from None
    if not isinstance(meta, dict):
        raise ModelError(f"{path}: '{key}' metadata is not a JSON object")
    missing = [k for k in REQUIRED_KEYS if k not in meta]
    if missing:
        raise ModelError(f"{path}: '{key}' metadata lacks {', '.join(missing)}")
    return meta


def _check_roles(enc_meta: dict, dec_meta: dict, enc_path: Path, dec_path: Path) -> None:
    for meta, path, role in ((enc_meta, enc_path, "encoder"), (dec_meta, dec_path, "decoder")):
        if meta["format_version"] not in SUPPORTED_FORMAT_VERSIONS:
            raise ModelError(f"{path}: format_version {meta['format_version']!r} is not supported "
                             f"(this runtime reads {SUPPORTED_FORMAT_VERSIONS})")
        if meta["role"] != role:
            raise ModelError(f"{path}: metadata role is {meta['role']!r}, expected {role!r}")
    differing = [k for k in SHARED_KEYS if enc_meta[k] != dec_meta[k]]
    if differing:
        raise ModelError(f"{enc_path.parent}: encoder and decoder metadata differ in {', '.join(differing)}")


def _feature_config_and_norm(meta: dict, path: Path):
    """-> (FeatureConfig, mean, std) from validated metadata."""
    from vc.dsp import FeatureConfig  # the C++ kernel's config class; imported late to keep import cheap

    try:
        cfg = FeatureConfig.from_dict(meta["feature_config"])
    except Exception as exc:  # noqa: BLE001 - any malformed config becomes one clear message
        raise ModelError(f"{path}: bad feature_config in metadata: {exc}") from None
    if cfg.hash() != meta["feature_config_hash"]:
        raise ModelError(f"{path}: feature_config_hash {meta['feature_config_hash']!r} does not match "
                         f"its feature_config (hash {cfg.hash()!r})")
    mean = np.asarray(meta["norm_mean"], dtype=np.float32)
    std = np.asarray(meta["norm_std"], dtype=np.float32)
    for name, arr in (("norm_mean", mean), ("norm_std", std)):
        if arr.shape != (cfg.n_features,):
            raise ModelError(f"{path}: {name} has shape {arr.shape}, expected ({cfg.n_features},)")
        if not np.all(np.isfinite(arr)):
            raise ModelError(f"{path}: {name} has non-finite values")
    if np.any(std <= 0):
        raise ModelError(f"{path}: norm_std has values <= 0")
    if meta["variant"] not in VARIANTS:
        raise ModelError(f"{path}: variant {meta['variant']!r} is not one of {VARIANTS}")
    return cfg, mean, std


def _positive_int(meta: dict, key: str, path: Path) -> int:
    value = meta[key]
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ModelError(f"{path}: metadata {key}={value!r} is not a positive integer")
    return value


def _z_population(meta: dict, z_dim: int, path: Path) -> CodeStats | None:
    """The optional statistics of z over training speech (None in models exported before they existed)."""
    entry = meta.get(Z_POPULATION_KEY)
    if entry is None:
        return None
    try:
        mean = np.asarray(entry["mean"], np.float32)
        std = np.asarray(entry["std"], np.float32)
    except (TypeError, KeyError, ValueError):
        raise ModelError(f"{path}: metadata {Z_POPULATION_KEY} must hold lists 'mean' and 'std'") from None
    if mean.shape != (z_dim,) or std.shape != (z_dim,) or not (np.all(np.isfinite(mean)) and np.all(std > 0)
                                                              and np.all(np.isfinite(std))):
        raise ModelError(f"{path}: metadata {Z_POPULATION_KEY} must hold {z_dim} finite means and positive spreads")
    return CodeStats(mean, std)


def _check_io(session: ort.InferenceSession, path: Path, inputs, outputs) -> None:
    have_in = [i.name for i in session.get_inputs()]
    have_out = [o.name for o in session.get_outputs()]
    if sorted(have_in) != sorted(inputs):
        raise ModelError(f"{path}: inputs are {have_in}, expected {list(inputs)}")
    missing = [name for name in outputs if name not in have_out]
    if missing:
        raise ModelError(f"{path}: outputs are {have_out}, missing {missing}")


def _check_last_dim(session_io, name: str, expected: int, path: Path) -> None:
    for item in session_io:
        if item.name == name:
            last = item.shape[-1] if item.shape else None
            if isinstance(last, int) and last != expected:
                raise ModelError(f"{path}: '{name}' has last dimension {last}, metadata says {expected}")


class Model:
    """A loaded DSAE: ONNX Runtime sessions for encoder and decoder plus their validated metadata."""

    def __init__(self, model_dir=None, device: str = "auto", threads: int | None = None):
        self.model_dir = Path(model_dir) if model_dir is not None else default_model_dir()
        if device not in DEVICES:
            raise ModelError(f"device must be one of {', '.join(DEVICES)}, not {device!r}")
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise ModelError(f"threads must be a positive integer, not {threads!r}")
        self.threads = threads if threads is not None else default_threads()
        if not self.model_dir.is_dir():
            hint = " (train one, or set $VC_MODEL / --model)" if model_dir is None else ""
            raise ModelError(f"{self.model_dir}: model directory not found{hint}")
        enc_path = self.model_dir / ENCODER_FILE
        dec_path = self.model_dir / DECODER_FILE
        for p in (enc_path, dec_path):
            if not p.is_file():
                raise ModelError(f"{p}: missing (a model directory holds {ENCODER_FILE} and {DECODER_FILE})")
        self.device = device
        self._open_sessions(enc_path, dec_path, device)

        enc_meta = _read_metadata(self._encoder, enc_path)
        _check_roles(enc_meta, _read_metadata(self._decoder, dec_path), enc_path, dec_path)
        self.feature_config, self.mean, self.std = _feature_config_and_norm(enc_meta, enc_path)
        self.n_features = self.feature_config.n_features
        self._inv_std = (1.0 / self.std).astype(np.float32)
        self.f_dim = _positive_int(enc_meta, "f_dim", enc_path)
        self.z_dim = _positive_int(enc_meta, "z_dim", enc_path)
        self.hidden_dim = _positive_int(enc_meta, "hidden_dim", enc_path)
        self.segment_length = _positive_int(enc_meta, "segment_length", enc_path)
        self.z_population = _z_population(enc_meta, self.z_dim, enc_path)
        self.metadata = enc_meta
        self.variant = enc_meta["variant"]
        self.model_id = enc_meta["model_id"]
        self._check_graphs(enc_path, dec_path)
        self._probe(enc_path, dec_path)
        try:   # optional: what lets the conversion pick the target's frames by what is said
            self.phones = open_recogniser(self.model_dir, lambda path: self._session(path, self._providers),
                                          self.feature_config)
        except PhonesError as exc:
            raise ModelError(str(exc)) from None

    def _open_sessions(self, enc_path: Path, dec_path: Path, device: str) -> None:
        providers, self.provider_note = self._choose_providers(device)
        self._providers = providers
        self._encoder = self._session(enc_path, providers)
        self._decoder = self._session(dec_path, providers)
        self.provider = self._encoder.get_providers()[0]
        if device == "cuda" and self.provider != CUDA_PROVIDER:
            raise ModelError(f"device cuda: the CUDA provider did not start, ONNX Runtime offered "
                             f"{self.provider} instead ({_driver_problem() or 'see ONNX Runtime log'})")
        if device == "auto" and CUDA_PROVIDER in providers and self.provider != CUDA_PROVIDER:
            self.provider_note = "CUDA provider failed to start, using the CPU"

    def _check_graphs(self, enc_path: Path, dec_path: Path) -> None:
        """Input/output names and the sizes the graphs declare, against the metadata."""
        _check_io(self._encoder, enc_path, ENCODER_INPUTS, ENCODER_OUTPUTS)
        _check_io(self._decoder, dec_path, DECODER_INPUTS, DECODER_OUTPUTS)
        for session, path, which, sizes in (
                (self._encoder, enc_path, "get_inputs", {"x": self.n_features}),
                (self._encoder, enc_path, "get_outputs", {"f_mean": self.f_dim, "z_mean": self.z_dim}),
                (self._decoder, dec_path, "get_inputs", {"f": self.f_dim, "z": self.z_dim}),
                (self._decoder, dec_path, "get_outputs", {"x_mean": self.n_features})):
            for name, size in sizes.items():
                _check_last_dim(getattr(session, which)(), name, size, path)

    def _probe(self, enc_path: Path, dec_path: Path) -> None:
        # Graphs do not always declare output sizes; one run on silence settles them (and wakes the provider).
        x = np.zeros((1, self.segment_length, self.n_features), np.float32)
        try:
            outputs = self._encoder.run(ENCODER_OUTPUTS, {"x": x})
        except Exception as exc:  # noqa: BLE001
            raise ModelError(f"{enc_path}: fails on a ({x.shape}) input: {str(exc).splitlines()[0]}") from None
        expected = [(1, self.f_dim), (1, self.f_dim), (1, self.segment_length, self.z_dim),
                    (1, self.segment_length, self.z_dim)]
        for name, out, shape in zip(ENCODER_OUTPUTS, outputs, expected):
            if out.shape != shape:
                raise ModelError(f"{enc_path}: '{name}' has shape {out.shape}, metadata implies {shape}")
        try:
            x_mean = self._decoder.run(DECODER_OUTPUTS, {"f": outputs[0], "z": outputs[2]})[0]
        except Exception as exc:  # noqa: BLE001
            raise ModelError(f"{dec_path}: fails on the encoder's output: {str(exc).splitlines()[0]}") from None
        if x_mean.shape != x.shape:
            raise ModelError(f"{dec_path}: 'x_mean' has shape {x_mean.shape}, expected {x.shape}")

    def _choose_providers(self, device: str) -> tuple[list[str], str]:
        if device == "cpu":
            return [CPU_PROVIDER], "requested"
        reason = cuda_unavailable_reason()
        if device == "cuda":
            if reason:
                raise ModelError(f"device cuda is not usable: {reason}")
            return [CUDA_PROVIDER, CPU_PROVIDER], "requested"
        if reason and CUDA_PROVIDER not in ort.get_available_providers():
            return [CPU_PROVIDER], "CPU-only onnxruntime"
        if reason:
            return [CPU_PROVIDER], "CUDA not usable: " + reason
        return [CUDA_PROVIDER, CPU_PROVIDER], "CUDA available"

    def _session(self, path: Path, providers: list[str]) -> ort.InferenceSession:
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Threads sleep between calls instead of spinning: the streaming engine calls once per hop and
        # batch jobs share the cores with other processes.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        try:
            return ort.InferenceSession(str(path), sess_options=options, providers=providers)
        except Exception as exc:  # noqa: BLE001 - ORT raises several types; all mean "unusable file"
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"{path}: ONNX Runtime cannot load it: {first_line}") from None

    def __repr__(self) -> str:
        return (f"Model({str(self.model_dir)!r}, id={self.model_id!r}, variant={self.variant}, "
                f"f_dim={self.f_dim}, z_dim={self.z_dim}, provider={self.provider})")

    def describe(self) -> str:
        """One line for CLIs: which model, which provider, and why."""
        note = f" ({self.provider_note})" if self.provider_note not in ("requested", "CUDA available") else ""
        int8 = ", int8 LSTM weights" if self.metadata.get(QUANTISED_KEY) else ""
        return (f"model {self.model_dir} [{self.model_id}, {self.variant}, f={self.f_dim}, z={self.z_dim}{int8}] "
                f"on {self.provider}{note}, {self.threads} thread(s)")

    # --- numerics -----------------------------------------------------------------------------------------
    def normalise(self, frames: np.ndarray) -> np.ndarray:
        """Raw log-magnitude frames (..., n_features) -> the model's normalised float32 input."""
        return ((np.asarray(frames, dtype=np.float32) - self.mean) * self._inv_std).astype(np.float32, copy=False)

    def denormalise(self, x: np.ndarray) -> np.ndarray:
        return (np.asarray(x, dtype=np.float32) * self.std + self.mean).astype(np.float32, copy=False)

    def encode(self, x: np.ndarray):
        """Normalised (batch, T, n_features) -> (f_mean, f_logvar, z_mean, z_logvar)."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 3 or x.shape[2] != self.n_features:
            raise ValueError(f"encode expects (batch, T, {self.n_features}), got {x.shape}")
        f_mean, f_logvar, z_mean, z_logvar = self._encoder.run(ENCODER_OUTPUTS, {"x": x})
        return f_mean, f_logvar, z_mean, z_logvar

    def decode(self, f: np.ndarray, z: np.ndarray) -> np.ndarray:
        """(batch, f_dim) and (batch, T, z_dim) -> normalised (batch, T, n_features)."""
        f = np.ascontiguousarray(f, dtype=np.float32)
        z = np.ascontiguousarray(z, dtype=np.float32)
        if f.ndim != 2 or f.shape[1] != self.f_dim:
            raise ValueError(f"decode expects f of shape (batch, {self.f_dim}), got {f.shape}")
        if z.ndim != 3 or z.shape[2] != self.z_dim or z.shape[0] != f.shape[0]:
            raise ValueError(f"decode expects z of shape ({f.shape[0]}, T, {self.z_dim}), got {z.shape}")
        return self._decoder.run(DECODER_OUTPUTS, {"f": f, "z": z})[0]


def load_model(model_dir=None, device: str = "auto", threads: int | None = None) -> Model:
    """Load a model directory (default: $VC_MODEL, else the repository's models/default)."""
    return Model(model_dir, device=device, threads=threads)
