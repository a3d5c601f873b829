#include "griffinlim.hpp"

#include "checks.hpp"

#include "simd.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

namespace vcdsp {

namespace {

// The loops below work on interleaved (re, im) floats so that they vectorise.

VCDSP_SIMD_CLONES
void scale_phasors(const float* __restrict mag, const float* __restrict angle, float* __restrict spec, int bins) {
    for (int b = 0; b < bins; ++b) {
        spec[2 * b] = mag[b] * angle[2 * b];
        spec[2 * b + 1] = mag[b] * angle[2 * b + 1];
    }
}

VCDSP_SIMD_CLONES
void multiply_add(const float* __restrict a, const float* __restrict b, float* __restrict dst, int n) {
    for (int j = 0; j < n; ++j) dst[j] += a[j] * b[j];
}

VCDSP_SIMD_CLONES
void multiply_into(const float* __restrict a, const float* __restrict b, float* __restrict dst, int n) {
    for (int j = 0; j < n; ++j) dst[j] = a[j] * b[j];
}

VCDSP_SIMD_CLONES
void scale_in_place(float* __restrict x, const float* __restrict scale, std::int64_t n) {
    for (std::int64_t i = 0; i < n; ++i) x[i] *= scale[i];
}

// angle = unit(rebuilt - beta * previous); previous = rebuilt. A zero vector stays zero. The vector is
// first divided by its larger part, so that its squares can neither overflow nor underflow.
VCDSP_SIMD_CLONES
void momentum_phase(const float* __restrict rebuilt, float beta, float* __restrict previous,
                    float* __restrict angle, int bins) {
    const float tiny = std::numeric_limits<float>::min();
    for (int b = 0; b < bins; ++b) {
        const float re = rebuilt[2 * b] - beta * previous[2 * b];
        const float im = rebuilt[2 * b + 1] - beta * previous[2 * b + 1];
        previous[2 * b] = rebuilt[2 * b];
        previous[2 * b + 1] = rebuilt[2 * b + 1];
        // s: the power of two that brings the larger part into [1, 2) (from its exponent bits; 2^127 for
        // zero and subnormals), so the squares below neither overflow nor underflow.
        const float big = std::max(std::fabs(re), std::fabs(im));
        std::uint32_t bits;
        std::memcpy(&bits, &big, sizeof bits);
        const std::uint32_t scale_bits = (254u - (bits >> 23)) << 23;
        float s;
        std::memcpy(&s, &scale_bits, sizeof s);
        const float x = re * s, y = im * s;
        const float inv = 1.0f / (std::sqrt(x * x + y * y) + tiny);
        angle[2 * b] = x * inv;
        angle[2 * b + 1] = y * inv;
    }
}

inline float* floats(cfloat* c) { return reinterpret_cast<float*>(c); }
inline const float* floats(const cfloat* c) { return reinterpret_cast<const float*>(c); }

}  // namespace

void overlap_add_frame(const StftKernel& k, const float* mag, const cfloat* angle, FrameScratch& s, float* dst) {
    scale_phasors(mag, floats(angle), floats(s.spectrum.data()), k.bins());
    irfft(k.plans(), s.spectrum.data(), s.frame.data());
    multiply_add(k.synthesis_window().data(), s.frame.data(), dst, k.n_fft());
}

void update_frame_phase(const StftKernel& k, const float* frame_start, float beta, FrameScratch& s,
                        cfloat* angle, cfloat* previous) {
    multiply_into(k.window().data(), frame_start, s.frame.data(), k.n_fft());
    rfft(k.plans(), s.frame.data(), s.spectrum.data());
    momentum_phase(floats(s.spectrum.data()), beta, floats(previous), floats(angle), k.bins());
}

std::int64_t griffinlim_length(const StftKernel& k, std::int64_t frames, std::int64_t length) {
    if (length >= 0 && k.n_frames(length) != frames)
        throw std::invalid_argument("griffinlim: length=" + std::to_string(length) + " gives " +
                                    std::to_string(k.n_frames(length)) + " frames, the magnitude has " +
                                    std::to_string(frames));
    return k.istft_length(frames, length);
}

void unit_phasors(cfloat* phasors, std::int64_t n) {
    for (std::int64_t i = 0; i < n; ++i) {
        const float size = std::max(std::fabs(phasors[i].real()), std::fabs(phasors[i].imag()));
        const cfloat lifted = phasors[i] * (size < 0x1p-60f ? 0x1p60f : 1.0f);  // out of the subnormal range
        const float big = std::max(std::fabs(lifted.real()), std::fabs(lifted.imag()));
        if (!(big >= std::numeric_limits<float>::min())) {
            phasors[i] = cfloat(0.0f, 0.0f);
            continue;
        }
        const cfloat scaled = lifted / big;
        phasors[i] = scaled / std::sqrt(scaled.real() * scaled.real() + scaled.imag() * scaled.imag());
    }
}

void check_griffinlim(int n_iter, float momentum) {
    check_n_iter(n_iter);
    check_momentum(momentum);
}

void griffinlim(const StftKernel& k, const float* mag, std::int64_t frames, cfloat* angles, int n_iter,
                float momentum, std::int64_t length, float* out) {
    check_griffinlim(n_iter, momentum);
    const int bins = k.bins(), n_fft = k.n_fft(), hop = k.hop_length(), pad = k.pad();
    const std::int64_t n_out = griffinlim_length(k, frames, length);
    const std::int64_t total = n_fft + hop * (frames - 1);  // padded signal, as istft builds it

    // The window-sum normalisation, zeroed outside the returned samples: each iteration then
    // re-analyses exactly what istft(..., length) followed by stft(center=...) would see.
    std::vector<float> scale = k.inverse_window_sumsquare(frames);
    for (std::int64_t p = 0; p < total; ++p)
        if (p < pad || p >= pad + n_out) scale[p] = 0.0f;

    std::vector<float> signal(total);
    std::vector<cfloat> previous(static_cast<std::size_t>(frames) * bins, cfloat(0.0f, 0.0f));
    FrameScratch scratch(n_fft);
    const float beta = momentum / (1.0f + momentum);

    auto synthesise = [&] {
        std::fill(signal.begin(), signal.end(), 0.0f);
        for (std::int64_t t = 0; t < frames; ++t)
            overlap_add_frame(k, mag + t * bins, angles + t * bins, scratch, signal.data() + t * hop);
        scale_in_place(signal.data(), scale.data(), total);
    };

    for (int it = 0; it < n_iter; ++it) {
        synthesise();
        for (std::int64_t t = 0; t < frames; ++t)
            update_frame_phase(k, signal.data() + t * hop, beta, scratch, angles + t * bins, previous.data() + t * bins);
    }
    synthesise();
    for (std::int64_t i = 0; i < n_out; ++i) {
        const std::int64_t p = i + pad;
        out[i] = p < total ? signal[p] : 0.0f;
    }
}

}  // namespace vcdsp
