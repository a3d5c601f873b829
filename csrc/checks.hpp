// Every parameter and value check of the kernel, in one place: the constructors and entry points call
// these, the bindings expose them (vc.dsp and FeatureConfig use them instead of rules of their own), so a
// value is accepted or refused alike on every path (whole-signal, streaming, Python).
#pragma once

#include <cmath>
#include <cstdio>
#include <complex>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>
#include <type_traits>

namespace vcdsp {

// Largest sample or magnitude accepted. Far beyond any audio; below it no float32 transform of ours
// overflows (an FFT of n_fft <= 2^16 such values stays below float32's 3.4e38).
constexpr float kMaxValue = 1e30f;

inline std::string number(double v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%g", v);
    return buf;
}

inline void check_n_fft(int n_fft) {
    // Even sizes only: then n_fft = 2*(bins-1) is recoverable from a spectrogram, as librosa assumes.
    if (n_fft < 2 || n_fft % 2 || n_fft > (1 << 16))
        throw std::invalid_argument("n_fft must be even, from 2 to 65536, got " + std::to_string(n_fft));
}

inline void check_hop_length(int hop_length) {
    if (hop_length < 1) throw std::invalid_argument("hop_length must be positive, got " + std::to_string(hop_length));
}

inline void check_log_floor(double floor) {
    if (!(floor >= std::numeric_limits<float>::min() && floor <= kMaxValue))
        throw std::invalid_argument("log_floor must be a number from 1.2e-38 to 1e30, got " + number(floor));
}

inline void check_n_iter(int n_iter) {
    if (n_iter < 0) throw std::invalid_argument("n_iter must be >= 0, got " + std::to_string(n_iter));
}

inline void check_momentum(double momentum) {
    if (!(momentum >= 0.0 && momentum <= 1.0))
        throw std::invalid_argument("momentum must be in [0, 1], got " + number(momentum));
}

inline void check_lookahead(int lookahead) {
    if (lookahead < 0) throw std::invalid_argument("lookahead must be >= 0, got " + std::to_string(lookahead));
}

inline void check_gamma(double gamma) {
    if (!(gamma > 0.0 && std::isfinite(gamma)))
        throw std::invalid_argument("gamma must be a positive finite number, got " + number(gamma));
}

inline void check_tolerance(double tolerance) {
    if (!(tolerance > 0.0 && tolerance < 1.0))
        throw std::invalid_argument("tolerance must be in (0, 1), got " + number(tolerance));
}

// Samples or spectrogram values: finite and within +-kMaxValue (complex values part by part, so that no
// magnitude is computed, which could overflow). `non_negative` for magnitudes.
template <class T>
void check_values(const T* data, std::int64_t n, const std::string& who, const char* what, bool non_negative = false) {
    for (std::int64_t i = 0; i < n; ++i) {
        bool ok;
        if constexpr (std::is_same_v<T, std::complex<float>>)
            ok = std::fabs(data[i].real()) <= kMaxValue && std::fabs(data[i].imag()) <= kMaxValue;
        else
            ok = std::fabs(data[i]) <= kMaxValue && (!non_negative || data[i] >= 0);
        if (ok) continue;
        std::string problem;
        if constexpr (std::is_same_v<T, std::complex<float>>)
            problem = std::isfinite(data[i].real()) && std::isfinite(data[i].imag()) ? "a value beyond 1e30"
                                                                                      : "NaN or infinity";
        else
            problem = !std::isfinite(data[i]) ? "NaN or infinity"
                      : std::fabs(data[i]) > kMaxValue ? "a value beyond 1e30 (" + number(data[i]) + ")"
                                                       : "a negative value (" + number(data[i]) + ")";
        throw std::invalid_argument(who + ": the " + what + " contains " + problem + " at index " + std::to_string(i));
    }
}

}  // namespace vcdsp
