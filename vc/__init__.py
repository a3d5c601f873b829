"""Voice conversion runtime: ONNX Runtime and a C++ DSP kernel; never imports torch.

`vc.convert(audio, sr, target, model=None)` converts a recording (see vc/conversion.py); `vc.load_model`
loads a model directory. Both are imported on first use, so `import vc` stays cheap.
"""

__all__ = ["convert", "load_model"]


def __getattr__(name):
    if name == "convert":
        from vc.conversion import convert

        return convert
    if name == "load_model":
        from vc.model import load_model

        return load_model
    raise AttributeError(f"module 'vc' has no attribute {name!r}")
