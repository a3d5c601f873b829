"""Builds the C++ DSP kernel `vc._dsp` (pybind11, FFTW3 single precision)."""
import shlex
import subprocess

from pybind11.setup_helpers import Pybind11Extension, build_ext
from setuptools import setup


def pkg_config(*args: str) -> list[str]:
    try:
        out = subprocess.run(["pkg-config", *args, "fftw3f"], check=True,
                             capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise SystemExit(
            "FFTW3 (single precision) was not found through pkg-config 'fftw3f'. "
            "Install it: apt-get install -y libfftw3-dev pkg-config") from exc
    return shlex.split(out)


cflags = pkg_config("--cflags")
libs = pkg_config("--libs")

ext = Pybind11Extension(
    "vc._dsp",
    sources=sorted(str(p) for p in __import__("pathlib").Path("csrc").glob("*.cpp")),
    include_dirs=["csrc"] + [f[2:] for f in cflags if f.startswith("-I")],
    libraries=[f[2:] for f in libs if f.startswith("-l")],
    library_dirs=[f[2:] for f in libs if f.startswith("-L")],
    cxx_std=17,
    extra_compile_args=["-O3", "-ffast-math", "-fno-finite-math-only"],
)

setup(ext_modules=[ext], cmdclass={"build_ext": build_ext})
