"""Voice conversion runtime: ONNX Runtime and a C++ DSP kernel; never imports torch."""
