// Python bindings of the DSP kernel (module vc._dsp). Argument names users see live in vc/dsp.py; parameter
// and value checks live in the kernel (checks.hpp, called by its constructors and entry points) and are
// exposed here for vc/dsp.py; this layer converts arrays, validates shapes and releases the GIL.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cmath>
#include <stdexcept>
#include <string>

#include "checks.hpp"
#include "griffinlim.hpp"
#include "pghi.hpp"
#include "stft.hpp"
#include "streaming.hpp"

namespace py = pybind11;
using namespace vcdsp;

namespace {

// forcecast: float64 and non-contiguous input are converted (copied) here.
using FloatArray = py::array_t<float, py::array::c_style | py::array::forcecast>;
using ComplexArray = py::array_t<std::complex<float>, py::array::c_style | py::array::forcecast>;

std::vector<float> window_vector(const FloatArray& window) {
    if (window.ndim() != 1) throw std::invalid_argument("the window must be 1-D");
    return std::vector<float>(window.data(), window.data() + window.shape(0));
}

// A numpy array that owns the vector's storage: no copy. width > 0 makes it (size/width, width).
py::array_t<float> to_array(std::vector<float>&& v, py::ssize_t width = 0) {
    auto* moved = new std::vector<float>(std::move(v));
    py::capsule owner(moved, [](void* p) { delete static_cast<std::vector<float>*>(p); });
    const auto size = static_cast<py::ssize_t>(moved->size());
    if (width > 0)
        return py::array_t<float>({size / width, width}, {width * static_cast<py::ssize_t>(sizeof(float)),
                                                          static_cast<py::ssize_t>(sizeof(float))},
                                  moved->data(), owner);
    return py::array_t<float>(size, moved->data(), owner);
}

std::string shape_of(const py::array& a) {
    std::string s = "(";
    for (py::ssize_t d = 0; d < a.ndim(); ++d) s += (d ? ", " : "") + std::to_string(a.shape(d));
    return s + (a.ndim() == 1 ? ",)" : ")");
}

const float* signal_data(const FloatArray& y, const StftKernel& k, const char* who) {
    if (y.ndim() != 1)
        throw std::invalid_argument(std::string(who) + ": expected a 1-D signal, got shape " + shape_of(y));
    k.check_signal(y.data(), y.shape(0), who);
    return y.data();
}

// Frame-major spectrogram (frames, bins) with finite values.
void check_spectrogram(const py::array& S, int bins, const char* who, const char* what) {
    if (S.ndim() != 2)
        throw std::invalid_argument(std::string(who) + ": expected a 2-D " + what + " (bins, frames), got shape " +
                                    shape_of(S));
    if (S.shape(0) == 0 || S.shape(1) == 0)
        throw std::invalid_argument(std::string(who) + ": the " + what + " is empty");
    if (S.shape(1) != bins)
        throw std::invalid_argument(std::string(who) + ": the " + what + " has " + std::to_string(S.shape(1)) +
                                    " frequency bins, expected n_fft/2+1 = " + std::to_string(bins));
}


}  // namespace

// One long function on purpose: pybind11's module body is the table of what Python sees, read best whole.
PYBIND11_MODULE(_dsp, m) {
    m.doc() = "C++ DSP kernel: FFTW STFT/ISTFT, log-magnitude features, Griffin-Lim, PGHI";

    py::register_exception_translator([](std::exception_ptr p) {
        try {
            if (p) std::rethrow_exception(p);
        } catch (const std::invalid_argument& e) {
            PyErr_SetString(PyExc_ValueError, e.what());
        }
    });

    py::class_<StftKernel>(m, "StftKernel")
        .def(py::init([](const FloatArray& window, int hop_length, bool center) {
                 return new StftKernel(window_vector(window), hop_length, center);
             }),
             py::arg("window"), py::arg("hop_length"), py::arg("center"))
        .def_property_readonly("n_fft", &StftKernel::n_fft)
        .def_property_readonly("hop_length", &StftKernel::hop_length)
        .def_property_readonly("bins", &StftKernel::bins)
        .def_property_readonly("center", &StftKernel::center)
        .def("n_frames", &StftKernel::n_frames, py::arg("n_samples"))
        .def(
            "stft",
            [](const StftKernel& k, const FloatArray& y) {
                const float* data = signal_data(y, k, "stft");
                const std::int64_t n = y.shape(0), frames = k.n_frames(n);
                py::array_t<std::complex<float>> out({frames, static_cast<std::int64_t>(k.bins())});
                cfloat* dst = out.mutable_data();
                {
                    py::gil_scoped_release release;
                    k.stft(data, n, dst);
                }
                return out;
            },
            py::arg("y"), "Frame-major complex spectrogram (frames, bins).")
        .def(
            "log_magnitude",
            [](const StftKernel& k, const FloatArray& y, float floor, int first_bin) {
                const float* data = signal_data(y, k, "log_magnitude");
                k.check_log_magnitude(floor, first_bin);
                const std::int64_t n = y.shape(0), frames = k.n_frames(n);
                py::array_t<float> out({frames, static_cast<std::int64_t>(k.bins() - first_bin)});
                float* dst = out.mutable_data();
                {
                    py::gil_scoped_release release;
                    k.log_magnitude(data, n, floor, first_bin, dst);
                }
                return out;
            },
            py::arg("y"), py::arg("log_floor"), py::arg("first_bin"))
        .def(
            "istft",
            [](const StftKernel& k, const ComplexArray& S, std::int64_t length) {
                check_spectrogram(S, k.bins(), "istft", "spectrogram");
                const std::int64_t frames = S.shape(0);
                check_values(S.data(), S.size(), "istft", "spectrogram");
                const std::int64_t n_out = k.istft_length(frames, length);
                py::array_t<float> out(n_out);
                float* dst = out.mutable_data();
                const cfloat* src = S.data();
                {
                    py::gil_scoped_release release;
                    k.istft(src, frames, length, dst);
                }
                return out;
            },
            py::arg("S"), py::arg("length") = -1, "S is frame-major (frames, bins).")
        .def(
            "griffinlim",
            [](const StftKernel& k, const FloatArray& mag, const ComplexArray& init, int n_iter, float momentum,
               std::int64_t length) {
                check_spectrogram(mag, k.bins(), "griffinlim", "magnitude");
                check_griffinlim(n_iter, momentum);
                check_values(mag.data(), mag.size(), "griffinlim", "magnitude", true);
                if (init.ndim() != 2 || init.shape(0) != mag.shape(0) || init.shape(1) != mag.shape(1))
                    throw std::invalid_argument("griffinlim: the initial phase must have the magnitude's shape");
                check_values(init.data(), init.size(), "griffinlim", "initial phase");
                const std::int64_t frames = mag.shape(0);
                const std::int64_t n_out = griffinlim_length(k, frames, length);
                py::array_t<std::complex<float>> angles({frames, static_cast<std::int64_t>(k.bins())});
                std::copy(init.data(), init.data() + init.size(), angles.mutable_data());
                unit_phasors(angles.mutable_data(), angles.size());
                py::array_t<float> out(n_out);
                float* dst = out.mutable_data();
                cfloat* phases = angles.mutable_data();
                const float* m = mag.data();
                {
                    py::gil_scoped_release release;
                    griffinlim(k, m, frames, phases, n_iter, momentum, length, dst);
                }
                return out;
            },
            py::arg("mag"), py::arg("init"), py::arg("n_iter"), py::arg("momentum"), py::arg("length") = -1,
            "mag and init (unit phasors) are frame-major (frames, bins).");

    py::class_<StreamingLogMagnitude>(m, "StreamingLogMagnitude")
        .def(py::init([](const FloatArray& window, int hop_length, bool center, float log_floor, int first_bin) {
                 return new StreamingLogMagnitude(window_vector(window), hop_length, center, log_floor, first_bin);
             }),
             py::arg("window"), py::arg("hop_length"), py::arg("center"), py::arg("log_floor"), py::arg("first_bin"))
        .def_property_readonly("samples_pushed", &StreamingLogMagnitude::samples_pushed)
        .def_property_readonly("frames_emitted", &StreamingLogMagnitude::frames_emitted)
        .def(
            "push",
            [](StreamingLogMagnitude& s, const FloatArray& x) {
                if (x.ndim() != 1)
                    throw std::invalid_argument("StreamingLogMagnitude.push: expected a 1-D block, got shape " +
                                                shape_of(x));
                const float* src = x.data();
                const std::int64_t n = x.shape(0);
                std::vector<float> out;
                {
                    py::gil_scoped_release release;
                    out = s.push(src, n);
                }
                return to_array(std::move(out), s.width());
            },
            py::arg("samples"))
        .def("flush",
             [](StreamingLogMagnitude& s) { return to_array(s.flush(), s.width()); })
        .def("reset", &StreamingLogMagnitude::reset);

    py::class_<StreamingGriffinLim>(m, "StreamingGriffinLim")
        .def(py::init([](const FloatArray& window, int hop_length, bool center, int n_iter, float momentum,
                         int lookahead, double gamma) {
                 return new StreamingGriffinLim(window_vector(window), hop_length, center, n_iter, momentum,
                                                lookahead, gamma);
             }),
             py::arg("window"), py::arg("hop_length"), py::arg("center"), py::arg("n_iter"), py::arg("momentum"),
             py::arg("lookahead"), py::arg("gamma"))
        .def_property_readonly("lookahead", &StreamingGriffinLim::lookahead)
        .def_property_readonly("frames_pushed", &StreamingGriffinLim::frames_pushed)
        .def_property_readonly("samples_emitted", &StreamingGriffinLim::samples_emitted)
        .def("final_samples_after", &StreamingGriffinLim::final_samples_after, py::arg("frames"))
        .def(
            "push",
            [](StreamingGriffinLim& s, const FloatArray& mag) {
                if (mag.ndim() != 2 || mag.shape(1) != s.bins())
                    throw std::invalid_argument("StreamingGriffinLim.push: expected frames of " +
                                                std::to_string(s.bins()) + " bins, got shape " + shape_of(mag));
                const float* src = mag.data();
                const std::int64_t k = mag.shape(0);
                std::vector<float> out;
                {
                    py::gil_scoped_release release;
                    out = s.push(src, k);
                }
                return to_array(std::move(out));
            },
            py::arg("mag"), "mag is frame-major (frames, bins).")
        .def("flush",
             [](StreamingGriffinLim& s) {
                 std::vector<float> out;
                 {
                     py::gil_scoped_release release;
                     out = s.flush();
                 }
                 return to_array(std::move(out));
             })
        .def("reset", &StreamingGriffinLim::reset);

    // The kernel's own rules, for vc.dsp and FeatureConfig to apply before any kernel object exists.
    m.attr("MAX_VALUE") = kMaxValue;
    m.def("check_n_fft", &check_n_fft, py::arg("n_fft"));
    m.def("check_hop_length", &check_hop_length, py::arg("hop_length"));
    m.def("check_log_floor", &check_log_floor, py::arg("log_floor"));
    m.def("check_griffinlim", &check_griffinlim, py::arg("n_iter"), py::arg("momentum"));
    m.def("check_magnitude", [](const FloatArray& mag, const std::string& who) {
              check_values(mag.data(), mag.size(), who, "magnitude", true);
          }, py::arg("mag"), py::arg("who"));
    m.def("pghi_gamma", [](const std::string& window, int win_length) { return pghi_gamma(window.c_str(), win_length); },
          py::arg("window"), py::arg("win_length"),
          "Gaussian-equivalent gamma (samples^2) of a window, 0 when unknown.");
    m.def(
        "pghi",
        [](const FloatArray& logmag, int n_fft, int hop_length, double gamma, float tolerance) {
            check_pghi(static_cast<int>(logmag.ndim() == 2 ? logmag.shape(1) : 0), n_fft, hop_length, gamma, tolerance);
            check_spectrogram(logmag, n_fft / 2 + 1, "pghi", "log-magnitude");
            check_values(logmag.data(), logmag.size(), "pghi", "log-magnitude");
            const std::int64_t frames = logmag.shape(0);
            const int bins = static_cast<int>(logmag.shape(1));
            py::array_t<float> phase({frames, static_cast<std::int64_t>(bins)});
            float* dst = phase.mutable_data();
            const float* src = logmag.data();
            {
                py::gil_scoped_release release;
                pghi(src, frames, bins, n_fft, hop_length, gamma, dst, nullptr, tolerance);
            }
            return phase;
        },
        py::arg("logmag"), py::arg("n_fft"), py::arg("hop_length"), py::arg("gamma"), py::arg("tolerance") = 1e-5f,
        "Phase (radians, frame-major) from a frame-major log-magnitude.");
}
