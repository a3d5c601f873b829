"""Benchmark the DSAE's training throughput and its exported inference against eager PyTorch.

    python tools/bench_train.py [--json] [--seconds S] [--threads N] [--clock cpu|wall] [--sprites]

train_segments_per_s: optimiser steps (forward, backward, Adam) of the default model and options (full
    variant, f-swap partner, speaker adversary) on CPU, batch 64 of 200 ms segments, `--threads` threads.
sprites_train_sequences_per_s (--sprites, instead of the two above): optimiser steps of the Sprites video
    model (training.sprites.data SPRITES_MODEL and SPRITES_OBJECTIVE: conv frame coders, full q,
    same-character f swap) on CPU, batch 32 of 8-frame 64x64 RGB sequences, `--threads` threads.
infer_ort_vs_torch: (eager PyTorch time) / (ONNX Runtime time) for encoder + decoder on one 200 ms
    segment (batch 1, T 20), one thread each as the engine runs (vc.model's session options), calls
    interleaved A B B A so that load from other processes falls on both alike, each call timed by its
    thread's CPU time (`--clock wall`: elapsed time); the floor is 2.
infer_ort_int8_vs_torch: the same with the encoder's LSTM weights as int8 (`vc-export --int8-lstm`, an
    option; the default model ships float weights), timed against PyTorch the same way.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")     # as vc-train does (see training/cli/train.py)


def _median_time(fn, seconds: float, min_runs: int = 5) -> float:
    fn()
    times = []
    end = time.perf_counter() + seconds
    while len(times) < min_runs or time.perf_counter() < end:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def bench_training(threads: int, seconds: float, batch: int = 64, n_speakers: int = 200) -> dict:
    import torch
    from training.config import DEFAULT_MODEL, DEFAULT_OBJECTIVE, Objective
    from training.dsae import DSAE, DSAEConfig
    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)                         # as vc-train does
    torch.manual_seed(0)
    model = DSAE(DSAEConfig.from_dict({**DEFAULT_MODEL, "n_speakers": n_speakers}))
    objective = Objective.from_dict(DEFAULT_OBJECTIVE)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    x, partner = torch.randn(batch, 20, 200), torch.randn(batch, 20, 200)
    speaker = torch.randint(0, n_speakers, (batch,))

    def step():
        loss, _ = model(x, partner, speaker, step=10_000, objective=objective)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()

    for _ in range(2):
        step()
    per_step = _median_time(step, seconds)
    return {"train_segments_per_s": round(batch / per_step, 1), "train_step_ms": round(1e3 * per_step, 2),
            "train_batch": batch}


def bench_sprites_training(threads: int, seconds: float, batch: int = 32) -> dict:
    import torch
    from training.config import Objective
    from training.dsae import DSAE, DSAEConfig
    from training.sprites.data import SPRITES_MODEL, SPRITES_OBJECTIVE
    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)
    torch.manual_seed(0)
    model = DSAE(DSAEConfig.from_dict(SPRITES_MODEL))
    objective = Objective.from_dict(SPRITES_OBJECTIVE)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    x, partner = torch.rand(batch, 8, 12288), torch.rand(batch, 8, 12288)

    def step():
        loss, _ = model(x, partner, step=10_000, objective=objective)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()

    step()
    per_step = _median_time(step, seconds, min_runs=3)
    return {"sprites_train_sequences_per_s": round(batch / per_step, 1),
            "sprites_train_step_ms": round(1e3 * per_step, 1), "sprites_train_batch": batch}


def _export_default_model(tmp: Path):
    """The default architecture, freshly initialised, as encoder.onnx and decoder.onnx in tmp."""
    import warnings

    import torch
    from training.config import DEFAULT_MODEL
    from training.dsae import DSAE, DSAEConfig
    from training.export import ExportDecoder, ExportEncoder
    from training.export import OPSET
    torch.manual_seed(0)
    model = DSAE(DSAEConfig.from_dict(DEFAULT_MODEL)).eval()
    c = model.config
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(ExportEncoder(model), (torch.zeros(1, 20, c.feature_dim),), str(tmp / "encoder.onnx"),
                          input_names=["x"], output_names=["f_mean", "f_logvar", "z_mean", "z_logvar"],
                          dynamic_axes={"x": {0: "batch", 1: "T"}}, opset_version=OPSET, dynamo=False)
        torch.onnx.export(ExportDecoder(model), (torch.zeros(1, c.f_dim), torch.zeros(1, 20, c.z_dim)),
                          str(tmp / "decoder.onnx"), input_names=["f", "z"], output_names=["x_mean"],
                          dynamic_axes={"f": {0: "batch"}, "z": {0: "batch", 1: "T"}}, opset_version=OPSET,
                          dynamo=False)
    return model


def _one_thread_session(path: Path):
    import onnxruntime as ort
    options = ort.SessionOptions()          # as vc.model opens the model for the engine
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def interleaved_medians(first, second, seconds: float, clock=time.thread_time, min_rounds: int = 50):
    """Median time of one call of each, timed call by call in the order A B B A, repeated."""
    first(), second()
    times = ([], [])
    end = time.perf_counter() + seconds
    while len(times[0]) < 2 * min_rounds or time.perf_counter() < end:
        for which in (0, 1, 1, 0):
            fn = (first, second)[which]
            t = clock()
            fn()
            times[which].append(clock() - t)
    return float(np.median(times[0])), float(np.median(times[1]))


def bench_inference(seconds: float, clock: str = "cpu") -> dict:
    """ONNX Runtime against eager PyTorch on one 200 ms segment, one thread each, interleaved."""
    import torch
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        from training.export import write_int8_lstm_graph
        model = _export_default_model(Path(tmp))
        write_int8_lstm_graph(Path(tmp) / "encoder.onnx", Path(tmp) / "encoder-int8.onnx")
        enc, dec = _one_thread_session(Path(tmp) / "encoder.onnx"), _one_thread_session(Path(tmp) / "decoder.onnx")
        enc_int8 = _one_thread_session(Path(tmp) / "encoder-int8.onnx")
    x = np.random.default_rng(0).normal(size=(1, 20, model.config.feature_dim)).astype(np.float32)
    x_t = torch.from_numpy(x)

    def run_ort():
        f_mean, _, z_mean, _ = enc.run(None, {"x": x})
        dec.run(None, {"f": f_mean, "z": z_mean})

    def run_ort_int8():
        f_mean, _, z_mean, _ = enc_int8.run(None, {"x": x})
        dec.run(None, {"f": f_mean, "z": z_mean})

    def run_torch():
        with torch.inference_mode():
            f_mean, _, z_mean, _ = model.encode(x_t)
            model.decode(f_mean, z_mean)

    # Both run in this thread (one intra-op thread, sequential execution), so the thread's CPU time
    # counts exactly their work and not the time other processes hold the core.
    timer = time.thread_time if clock == "cpu" else time.perf_counter
    t_ort, t_torch = interleaved_medians(run_ort, run_torch, seconds, clock=timer)
    t_int8, t_torch_again = interleaved_medians(run_ort_int8, run_torch, seconds, clock=timer)
    return {"infer_ort_ms": round(1e3 * t_ort, 3), "infer_torch_ms": round(1e3 * t_torch, 3),
            "infer_ort_vs_torch": round(t_torch / t_ort, 2), "infer_ort_int8_ms": round(1e3 * t_int8, 3),
            "infer_ort_int8_vs_torch": round(t_torch_again / t_int8, 2), "infer_threads": 1, "infer_clock": clock}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--threads", type=int, default=2, help="torch threads for the training benchmark")
    p.add_argument("--seconds", type=float, default=5.0, help="measuring time per benchmark")
    p.add_argument("--clock", choices=("cpu", "wall"), default="cpu",
                   help="inference timing: the thread's CPU time (default) or elapsed time")
    p.add_argument("--sprites", action="store_true", help="the Sprites video model's training throughput instead")
    args = p.parse_args(argv)
    result = {"threads": args.threads}
    if args.sprites:
        result.update(bench_sprites_training(args.threads, args.seconds))
    else:
        result.update(bench_training(args.threads, args.seconds))
        result.update(bench_inference(args.seconds, args.clock))
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k:24s} {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
