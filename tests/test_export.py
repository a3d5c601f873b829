"""vc-export: ONNX graphs with the README's names, dynamic axes and `dsae` metadata; parity with PyTorch."""
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from training.cli import export as export_cli
from training.dataset import SegmentDataset, write_synthetic_cache
from training.train import TrainConfig, load_model, train

METADATA_KEYS = {"format_version", "role", "feature_config", "feature_config_hash", "norm_mean", "norm_std",
                 "f_dim", "z_dim", "hidden_dim", "variant", "segment_length", "corpus", "model_id"}


@pytest.fixture(scope="module", params=["full", "factorised"])
def exported(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"export-{request.param}")
    cache = write_synthetic_cache(root / "cache", n_speakers=3, utterances_per_speaker=2, frames_per_utterance=60)
    config = TrainConfig.from_dict(dict(
        features=str(cache), out=str(root / "run"), epochs=1, batch_size=8, progress=False, threads=1,
        model={"f_dim": 6, "z_dim": 3, "hidden_dim": 16, "frame_hidden": 16, "variant": request.param,
               "adv_hidden": 8}))
    train(config)
    assert export_cli.main([str(root / "run"), "-o", str(root / "model")]) == 0
    return root, request.param


def _metadata(path):
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    return json.loads(props["dsae"])


def test_graphs_are_valid_and_named_as_the_contract_says(exported):
    root, _ = exported
    enc = onnx.load(str(root / "model" / "encoder.onnx"))
    dec = onnx.load(str(root / "model" / "decoder.onnx"))
    onnx.checker.check_model(enc, full_check=True)
    onnx.checker.check_model(dec, full_check=True)
    assert [i.name for i in enc.graph.input] == ["x"]
    assert [o.name for o in enc.graph.output] == ["f_mean", "f_logvar", "z_mean", "z_logvar"]
    assert [i.name for i in dec.graph.input] == ["f", "z"]
    assert [o.name for o in dec.graph.output] == ["x_mean"]
    assert {o.version for o in enc.opset_import if o.domain in ("", "ai.onnx")} == {17}
    x_dims = enc.graph.input[0].type.tensor_type.shape.dim
    assert x_dims[0].dim_param and x_dims[1].dim_param and x_dims[2].dim_value == 200


def test_metadata_carries_everything_the_runtime_needs(exported):
    root, variant = exported
    enc, dec = _metadata(root / "model" / "encoder.onnx"), _metadata(root / "model" / "decoder.onnx")
    assert set(enc) >= METADATA_KEYS and set(dec) >= METADATA_KEYS
    assert enc["role"] == "encoder" and dec["role"] == "decoder"
    assert {k: v for k, v in enc.items() if k != "role"} == {k: v for k, v in dec.items() if k != "role"}
    assert enc["variant"] == variant and enc["f_dim"] == 6 and enc["z_dim"] == 3 and enc["hidden_dim"] == 16
    assert enc["segment_length"] == 20 and enc["corpus"] == "synthetic" and enc["model_id"]
    mean = np.load(root / "cache" / "mean.npy")
    std = np.load(root / "cache" / "std.npy")
    np.testing.assert_allclose(enc["norm_mean"], mean, rtol=1e-6)
    np.testing.assert_allclose(enc["norm_std"], std, rtol=1e-6)
    manifest = json.loads((root / "cache" / "manifest.json").read_text())
    assert enc["feature_config"]["n_fft"] == manifest["feature_config"]["n_fft"]
    assert enc["feature_config_hash"]


def test_metadata_carries_z_statistics_of_the_training_speech(exported):
    """z_population: the statistics of z's posterior means over speech frames of training segments, as the
    runtime (vc.source) reads them; recomputed here through ONNX Runtime on the same segments."""
    from vc.levels import frame_level_db, is_speech as speech_frames
    from vc.dsp import FeatureConfig
    from vc.model import load_model as load_onnx

    root, _ = exported
    stats = _metadata(root / "model" / "encoder.onnx")["z_population"]
    data = SegmentDataset(str(root / "cache"), "train")
    x = data.batch(np.arange(len(data))).astype(np.float32)
    onnx_model = load_onnx(root / "model", device="cpu")
    z = onnx_model.encode(x)[2]
    manifest = json.loads((root / "cache" / "manifest.json").read_text())
    levels = frame_level_db(x * data.std + data.mean, FeatureConfig.from_dict(manifest["feature_config"]))
    speech = speech_frames(levels, float(levels.max()))
    assert stats["frames"] == int(speech.sum()) > 0
    np.testing.assert_allclose(stats["mean"], z[speech].mean(axis=0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(stats["std"], z[speech].std(axis=0), rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(onnx_model.z_population.std, stats["std"], rtol=1e-6)


def test_onnx_runtime_matches_pytorch_on_random_and_real_inputs(exported):
    root, _ = exported
    model, _ = load_model(root / "run")
    enc = ort.InferenceSession(str(root / "model" / "encoder.onnx"), providers=["CPUExecutionProvider"])
    dec = ort.InferenceSession(str(root / "model" / "decoder.onnx"), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1)
    real = SegmentDataset(root / "cache", "dev").batch(np.arange(5))
    for x in (rng.normal(size=(1, 20, 200)), rng.normal(size=(4, 33, 200)) * 3, real):
        x = x.astype(np.float32)
        with torch.no_grad():
            want = [t.numpy() for t in model.encode(torch.from_numpy(x))]
            want_x = model.decode(torch.from_numpy(want[0]), torch.from_numpy(want[2])).numpy()
        got = enc.run(None, {"x": x})
        assert [g.shape for g in got] == [w.shape for w in want]
        for g, w in zip(got, want):
            assert np.max(np.abs(g - w)) <= 1e-4
        got_x = dec.run(None, {"f": want[0], "z": want[2]})[0]
        assert got_x.shape == x.shape and np.max(np.abs(got_x - want_x)) <= 1e-4
    # conversion: the decoder takes f and z from different sequences
    f_other = rng.normal(size=(1, 6)).astype(np.float32)
    z_one = got[2][:1]
    assert dec.run(None, {"f": f_other, "z": z_one})[0].shape == (1, 20, 200)


def test_export_of_a_directory_without_a_run_fails_cleanly(tmp_path, capsys):
    rc = export_cli.main([str(tmp_path), "-o", str(tmp_path / "model")])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and err.startswith("vc-export: ") and len(err.splitlines()) == 1
    assert not (tmp_path / "model").exists()


def test_int8_lstm_export_stores_the_encoder_lstms_as_int8_and_keeps_the_codes(exported, tmp_path):
    """--int8-lstm: the encoder's LSTMs become DynamicQuantizeLSTM nodes, the metadata says so, the runtime
    loads the directory, and on real segments its codes stay within the export's tolerance of the float
    model's (while differing from them where an LSTM computes them: the weights really changed)."""
    from vc.model import load_model as load_onnx

    root, variant = exported
    assert export_cli.main([str(root / "run"), "-o", str(tmp_path / "int8"), "--int8-lstm"]) == 0
    ops = {node.op_type for node in onnx.load(str(tmp_path / "int8" / "encoder.onnx")).graph.node}
    assert "DynamicQuantizeLSTM" in ops and "LSTM" not in ops
    assert _metadata(tmp_path / "int8" / "encoder.onnx")["quantised"] == {"op_types": ["LSTM"], "weights": "int8"}
    assert "quantised" not in _metadata(tmp_path / "int8" / "decoder.onnx")
    float_model, int8_model = load_onnx(root / "model", device="cpu"), load_onnx(tmp_path / "int8", device="cpu")
    assert "int8 LSTM" in int8_model.describe() and "int8" not in float_model.describe()
    x = SegmentDataset(root / "cache", "dev").batch(np.arange(5)).astype(np.float32)
    want, got = float_model.encode(x), int8_model.encode(x)
    f_error, z_error = (np.linalg.norm(got[i] - want[i]) / np.linalg.norm(want[i]) for i in (0, 2))
    assert 0 < f_error <= 0.03 and z_error <= 0.03
    assert (z_error > 0) == (variant == "full")   # the factorised z comes from a frame MLP, not an LSTM
    assert "int8" in (tmp_path / "int8" / "README.md").read_text()


def test_int8_lstm_export_beyond_its_tolerance_keeps_the_float_encoder(exported, tmp_path, monkeypatch, capsys):
    from training import export as export_module

    root, _ = exported
    monkeypatch.setattr(export_module, "INT8_TOLERANCE", 0.0)
    rc = export_cli.main([str(root / "run"), "-o", str(tmp_path / "int8"), "--int8-lstm"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and err[-1].startswith("vc-export: ") and "int8" in err[-1] and "float encoder is kept" in err[-1]
    ops = {node.op_type for node in onnx.load(str(tmp_path / "int8" / "encoder.onnx")).graph.node}
    assert "LSTM" in ops and "DynamicQuantizeLSTM" not in ops
