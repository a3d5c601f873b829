"""Benchmark the DSAE's training throughput and its exported inference against eager PyTorch.

    python tools/bench_train.py [--json] [--seconds S] [--threads N] [--sprites]

train_segments_per_s: optimiser steps (forward, backward, Adam) of the default model and options (full
    variant, f-swap partner, speaker adversary) on CPU, batch 64 of 200 ms segments, `--threads` threads.
sprites_train_sequences_per_s (--sprites, instead of the two above): optimiser steps of the Sprites video model
    (training.sprites_data.SPRITES_MODEL: conv frame coders, full q, same-character f swap) on CPU, batch 32
    of 8-frame 64x64 RGB sequences, `--threads` threads.
infer_ort_vs_torch: (eager PyTorch time) / (ONNX Runtime time) for encoder + decoder on one 200 ms
    segment (batch 1, T 20), same thread count for both; the floor is 2.
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
    from training.dsae import DSAE, DSAEConfig
    from training.train import DEFAULT_MODEL
    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)                         # as vc-train does
    torch.manual_seed(0)
    model = DSAE(DSAEConfig.from_dict({**DEFAULT_MODEL, "n_speakers": n_speakers}))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    x, partner = torch.randn(batch, 20, 200), torch.randn(batch, 20, 200)
    speaker = torch.randint(0, n_speakers, (batch,))

    def step():
        loss, _ = model(x, partner, speaker, step=10_000)
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
    from training.dsae import DSAE, DSAEConfig
    from training.sprites_data import SPRITES_MODEL
    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)
    torch.manual_seed(0)
    model = DSAE(DSAEConfig.from_dict(SPRITES_MODEL))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    x, partner = torch.rand(batch, 8, 12288), torch.rand(batch, 8, 12288)

    def step():
        loss, _ = model(x, partner, step=10_000)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()

    step()
    per_step = _median_time(step, seconds, min_runs=3)
    return {"sprites_train_sequences_per_s": round(batch / per_step, 1),
            "sprites_train_step_ms": round(1e3 * per_step, 1), "sprites_train_batch": batch}


def bench_inference(threads: int, seconds: float) -> dict:
    import onnxruntime as ort
    import torch
    from training.dsae import DSAE, DSAEConfig, ExportDecoder, ExportEncoder
    from training.export import OPSET
    from training.train import DEFAULT_MODEL
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = DSAE(DSAEConfig.from_dict(DEFAULT_MODEL)).eval()
    c = model.config
    x = np.random.default_rng(0).normal(size=(1, 20, c.feature_dim)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        enc_path, dec_path = Path(tmp) / "encoder.onnx", Path(tmp) / "decoder.onnx"
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(ExportEncoder(model), (torch.from_numpy(x),), str(enc_path), input_names=["x"],
                              output_names=["f_mean", "f_logvar", "z_mean", "z_logvar"],
                              dynamic_axes={"x": {0: "batch", 1: "T"}}, opset_version=OPSET, dynamo=False)
            torch.onnx.export(ExportDecoder(model), (torch.zeros(1, c.f_dim), torch.zeros(1, 20, c.z_dim)),
                              str(dec_path), input_names=["f", "z"], output_names=["x_mean"],
                              dynamic_axes={"f": {0: "batch"}, "z": {0: "batch", 1: "T"}}, opset_version=OPSET,
                              dynamo=False)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        enc = ort.InferenceSession(str(enc_path), options, providers=["CPUExecutionProvider"])
        dec = ort.InferenceSession(str(dec_path), options, providers=["CPUExecutionProvider"])

    def run_ort():
        f_mean, _, z_mean, _ = enc.run(None, {"x": x})
        dec.run(None, {"f": f_mean, "z": z_mean})

    x_t = torch.from_numpy(x)

    def run_torch():
        with torch.inference_mode():
            f_mean, _, z_mean, _ = model.encode(x_t)
            model.decode(f_mean, z_mean)

    # Interleave the two so that load from other processes hits both alike.
    ort_times, torch_times = [], []
    for _ in range(5):
        ort_times.append(_median_time(run_ort, seconds / 10))
        torch_times.append(_median_time(run_torch, seconds / 10))
    t_ort, t_torch = float(np.median(ort_times)), float(np.median(torch_times))
    return {"infer_ort_ms": round(1e3 * t_ort, 3), "infer_torch_ms": round(1e3 * t_torch, 3),
            "infer_ort_vs_torch": round(t_torch / t_ort, 2)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seconds", type=float, default=5.0, help="measuring time per benchmark")
    p.add_argument("--sprites", action="store_true", help="the Sprites video model's training throughput instead")
    args = p.parse_args(argv)
    result = {"threads": args.threads}
    if args.sprites:
        result.update(bench_sprites_training(args.threads, args.seconds))
    else:
        result.update(bench_training(args.threads, args.seconds))
        result.update(bench_inference(args.threads, args.seconds))
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k:24s} {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
