"""vc.model: loading a model directory, validating its metadata, providers, numerics against torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers import tiny_model_dir

REPO = Path(__file__).resolve().parent.parent


def rewrite_metadata(model_dir: Path, which: str, **changes) -> None:
    """Change (or delete, with value None) keys of one file's dsae metadata; which: encoder|decoder."""
    import onnx

    path = model_dir / f"{which}.onnx"
    proto = onnx.load(str(path))
    entry = next(p for p in proto.metadata_props if p.key == "dsae")
    meta = json.loads(entry.value)
    for key, value in changes.items():
        if value is None:
            meta.pop(key, None)
        else:
            meta[key] = value
    entry.value = json.dumps(meta)
    onnx.save(proto, str(path))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_model_dir(tmp_path_factory.mktemp("tiny_model") / "model")


@pytest.fixture()
def tiny_copy(tiny, tmp_path):
    import shutil

    dst = tmp_path / "model"
    shutil.copytree(tiny[0], dst)
    return dst


def test_loads_metadata_and_matches_torch(tiny):
    import torch

    from vc.dsp import FeatureConfig
    from vc.model import load_model

    model_dir, torch_model = tiny
    m = load_model(model_dir, device="cpu", threads=1)
    assert (m.f_dim, m.z_dim, m.segment_length) == (8, 4, 20)
    assert m.provider == "CPUExecutionProvider"
    assert m.feature_config.hash() == FeatureConfig().hash()
    assert m.mean.shape == m.std.shape == (200,) and m.mean.dtype == np.float32
    assert m.metadata["model_id"] == "tiny-full-0"

    rng = np.random.default_rng(1)
    raw = (-4 + 2 * rng.standard_normal((3, 20, 200))).astype(np.float32)
    x = m.normalise(raw)
    np.testing.assert_allclose(m.denormalise(x), raw, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(x[0, 0], (raw[0, 0] - m.mean) / m.std, rtol=1e-5, atol=1e-5)

    f_mean, f_logvar, z_mean, z_logvar = m.encode(x)
    assert f_mean.shape == f_logvar.shape == (3, 8)
    assert z_mean.shape == z_logvar.shape == (3, 20, 4)
    with torch.no_grad():
        ref = torch_model.encode(torch.from_numpy(x))
    for ours, theirs in zip((f_mean, f_logvar, z_mean, z_logvar), ref):
        np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-4, atol=1e-5)

    # Dynamic batch and length; f swapped in from elsewhere.
    out = m.decode(f_mean[:1].repeat(2, 0), z_mean[:2, :7])
    assert out.shape == (2, 7, 200) and out.dtype == np.float32
    with torch.no_grad():
        ref_x = torch_model.decode(torch.from_numpy(f_mean[:1].repeat(2, 0)), torch.from_numpy(z_mean[:2, :7]))
    np.testing.assert_allclose(out, ref_x.numpy(), rtol=1e-4, atol=1e-5)

    with pytest.raises(ValueError, match="decode expects f"):
        m.decode(np.zeros((1, 5), np.float32), z_mean[:1])
    with pytest.raises(ValueError, match="encode expects"):
        m.encode(np.zeros((1, 20, 100), np.float32))


def test_threads_and_default_dir(tiny, monkeypatch):
    from vc.model import ModelError, default_threads, load_model

    monkeypatch.setenv("VC_MODEL", str(tiny[0]))
    m = load_model(device="cpu")
    assert m.model_dir == tiny[0]
    assert m.threads == default_threads() and 1 <= m.threads <= 4
    assert load_model(tiny[0], device="cpu", threads=2).threads == 2
    with pytest.raises(ModelError, match="threads"):
        load_model(tiny[0], threads=0)
    with pytest.raises(ModelError, match="device"):
        load_model(tiny[0], device="gpu")
    monkeypatch.setenv("VC_MODEL", str(tiny[0].parent / "nowhere"))
    with pytest.raises(ModelError, match="nowhere.*not found"):
        load_model()


def test_device_choice_is_never_a_silent_fallback(tiny):
    import onnxruntime as ort

    from vc.model import ModelError, cuda_unavailable_reason, load_model

    reason = cuda_unavailable_reason()
    m = load_model(tiny[0], device="auto")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        assert "CPU-only" in reason and "onnxruntime-gpu" in reason
        with pytest.raises(ModelError, match="device cuda is not usable: .*CPU-only"):
            load_model(tiny[0], device="cuda")
        assert m.provider == "CPUExecutionProvider"
        assert "CPU-only onnxruntime" in m.describe() and "CPUExecutionProvider" in m.describe()
    elif reason is not None:
        with pytest.raises(ModelError, match="cannot load its libraries"):
            load_model(tiny[0], device="cuda")
        assert m.provider == "CPUExecutionProvider"
    else:
        assert load_model(tiny[0], device="cuda").provider == "CUDAExecutionProvider"


@pytest.mark.parametrize("role, changes, message", [
    ("encoder", {"feature_config_hash": "0000"}, "feature_config_hash"),
    ("encoder", {"role": "decoder"}, "role is 'decoder'"),
    ("decoder", {"f_dim": 9}, "differ in f_dim"),
    ("encoder", {"format_version": 99}, "format_version 99"),
    ("encoder", {"model_id": None}, "lacks model_id"),
])
def test_bad_metadata_is_named(tiny_copy, role, changes, message):
    from vc.model import ModelError, load_model

    rewrite_metadata(tiny_copy, role, **changes)
    with pytest.raises(ModelError, match=message):
        load_model(tiny_copy, device="cpu")


def test_z_population_is_optional_and_checked(tiny_copy):
    from vc.model import ModelError, load_model

    assert load_model(tiny_copy, device="cpu").z_population is None   # models exported before it existed
    for role in ("encoder", "decoder"):
        rewrite_metadata(tiny_copy, role, z_population={"mean": [0.5] * 4, "std": [2.0] * 4, "frames": 9})
    stats = load_model(tiny_copy, device="cpu").z_population
    np.testing.assert_array_equal(stats.mean, np.full(4, 0.5, np.float32))
    for bad in ({"mean": [0.0] * 3, "std": [1.0] * 3}, {"mean": [0.0] * 4, "std": [1.0, 1.0, 0.0, 1.0]},
                {"mean": "nope"}):
        for role in ("encoder", "decoder"):
            rewrite_metadata(tiny_copy, role, z_population=bad)
        with pytest.raises(ModelError, match="z_population"):
            load_model(tiny_copy, device="cpu")


def test_bad_normalisation_and_sizes(tiny_copy):
    from vc.model import ModelError, load_model

    for role in ("encoder", "decoder"):
        rewrite_metadata(tiny_copy, role, norm_std=[1.0] * 199)
    with pytest.raises(ModelError, match=r"norm_std has shape \(199,\)"):
        load_model(tiny_copy, device="cpu")
    for role in ("encoder", "decoder"):
        rewrite_metadata(tiny_copy, role, norm_std=[0.0] * 200)
    with pytest.raises(ModelError, match="norm_std has values <= 0"):
        load_model(tiny_copy, device="cpu")
    for role in ("encoder", "decoder"):
        rewrite_metadata(tiny_copy, role, norm_std=[1.0] * 200, z_dim=5)
    # The graph's declared z size (4) contradicts the metadata (5).
    with pytest.raises(ModelError, match="has last dimension 4, metadata says 5"):
        load_model(tiny_copy, device="cpu")


def test_missing_and_broken_files(tiny_copy):
    from vc.model import ModelError, load_model

    (tiny_copy / "decoder.onnx").write_bytes(b"not a model")
    with pytest.raises(ModelError, match="decoder.onnx: ONNX Runtime cannot load it"):
        load_model(tiny_copy, device="cpu")
    (tiny_copy / "decoder.onnx").unlink()
    with pytest.raises(ModelError, match="decoder.onnx: missing"):
        load_model(tiny_copy, device="cpu")


def test_vc_never_imports_torch():
    code = ("import sys, vc\n"
            "assert 'onnxruntime' not in sys.modules, 'import vc should stay cheap'\n"
            "import vc.model, vc.audio, vc.speakers, vc.conversion, vc.cli.batch, vc.cli.enroll, vc.demo\n"
            "vc.convert; vc.load_model\n"
            "bad = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))\n"
            "assert not bad, bad\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_the_model_format_module_is_the_readme_contract():
    """vc.model_format names what the README's "Model directory" contract promises, no more, no less."""
    import re

    from vc import model_format as fmt

    text = (REPO / "README.md").read_text(encoding="utf-8")
    contract = text[text.index("**Model directory**"):text.index("**Target speaker**")]
    named = set(re.findall(r"`([a-z_]+)`", contract))
    io = set(fmt.ENCODER_INPUTS + fmt.ENCODER_OUTPUTS + fmt.DECODER_INPUTS + fmt.DECODER_OUTPUTS)
    assert io <= named and set(fmt.REQUIRED_KEYS) <= named and fmt.METADATA_KEY in named
    assert fmt.Z_POPULATION_KEY in named
    assert f"`{fmt.ENCODER_FILE}`" in contract and f"`{fmt.DECODER_FILE}`" in contract
    assert set(fmt.dynamic_axes("encoder")) == set(fmt.ENCODER_INPUTS + fmt.ENCODER_OUTPUTS)
    assert fmt.dynamic_axes("decoder")["f"] == {0: "batch"} and fmt.dynamic_axes("decoder")["z"] == {0: "batch", 1: "T"}
