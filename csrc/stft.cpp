#include "stft.hpp"

#include "checks.hpp"
#include "simd.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>

namespace vcdsp {

namespace {

// Natural log of a positive normal float (Cephes' logf polynomial, about 1 ulp), written so that
// the compiler vectorises the loop around it: glibc's logf is a scalar call here.
inline float log_positive(float x) {
    std::uint32_t bits;
    std::memcpy(&bits, &x, sizeof bits);
    float exponent = static_cast<float>(static_cast<std::int32_t>(bits >> 23) - 126);
    bits = (bits & 0x007fffffu) | 0x3f000000u;  // mantissa in [0.5, 1)
    float m;
    std::memcpy(&m, &bits, sizeof m);
    const bool low = m < 0.707106781f;  // keep m - 1 small: the polynomial is for [sqrt(.5)-1, sqrt(2)-1]
    exponent = low ? exponent - 1.0f : exponent;
    m = low ? m + m - 1.0f : m - 1.0f;
    const float z = m * m;
    float p = 7.0376836292e-2f;
    p = p * m - 1.1514610310e-1f;
    p = p * m + 1.1676998740e-1f;
    p = p * m - 1.2420140846e-1f;
    p = p * m + 1.4249322787e-1f;
    p = p * m - 1.6668057665e-1f;
    p = p * m + 2.0000714765e-1f;
    p = p * m - 2.4999993993e-1f;
    p = p * m + 3.3333331174e-1f;
    const float tail = p * m * z - 2.12194440e-4f * exponent - 0.5f * z;
    return m + tail + 0.693359375f * exponent;
}

VCDSP_SIMD_CLONES
void multiply(const float* __restrict a, const float* __restrict b, float* __restrict out, int n) {
    for (int j = 0; j < n; ++j) out[j] = a[j] * b[j];
}

// True when no value is NaN, infinite (an all-ones exponent field marks both) or beyond kMaxValue.
VCDSP_SIMD_CLONES
bool all_in_range(const float* __restrict x, std::ptrdiff_t n) {
    std::uint32_t bad = 0;
    for (std::ptrdiff_t i = 0; i < n; ++i) {
        std::uint32_t bits;
        std::memcpy(&bits, x + i, sizeof bits);
        bad |= static_cast<std::uint32_t>((bits & 0x7f800000u) == 0x7f800000u);
        bad |= static_cast<std::uint32_t>(std::fabs(x[i]) > kMaxValue);
    }
    return bad == 0;
}

// |re + i im| without overflow or underflow: the larger part times the length of the scaled pair.
inline float safe_abs(float re, float im) {
    const float a = std::fabs(re), b = std::fabs(im);
    const float big = std::max(a, b), small = std::min(a, b);
    if (big == 0.0f) return 0.0f;
    const float r = small / big;
    return big * std::sqrt(1.0f + r * r);
}

// row[k] = log(max(|spec[k]|, floor)) as log(max(|spec[k]|^2, floor^2)) / 2: no square root. Two loops:
// the de-interleaving one and the log one each vectorise well on their own.
VCDSP_SIMD_CLONES
void log_power_row(const float* __restrict spec, float* __restrict power, float* __restrict row,
                   std::ptrdiff_t width, float floor_sq) {
    for (std::ptrdiff_t k = 0; k < width; ++k) {
        const float re = spec[2 * k], im = spec[2 * k + 1];
        power[k] = std::max(re * re + im * im, floor_sq);
    }
    for (std::ptrdiff_t k = 0; k < width; ++k) row[k] = 0.5f * log_positive(power[k]);
}

// The same without squaring, where squares would leave float32's range: |S| beyond 1.8e19 (a power of
// infinity), or a floor whose square is not a normal float (below about 1.1e-19 or above 1.8e19).
void log_magnitude_row(const float* spec, float* power, float* row, std::ptrdiff_t width, float floor) {
    const float floor_sq = floor * floor;
    const bool squares_fit = floor_sq >= std::numeric_limits<float>::min() && std::isfinite(floor_sq);
    if (squares_fit) {
        log_power_row(spec, power, row, width, floor_sq);
        if (all_in_range(power, width)) return;
    }
    for (std::ptrdiff_t k = 0; k < width; ++k)
        row[k] = std::log(std::max(safe_abs(spec[2 * k], spec[2 * k + 1]), floor));
}

}  // namespace

StftKernel::StftKernel(std::vector<float> window, int hop_length, bool center)
    : window_(std::move(window)), center_(center) {
    n_fft_ = static_cast<int>(window_.size());
    check_n_fft(n_fft_);
    check_hop_length(hop_length);
    check_values(window_.data(), n_fft_, "StftKernel", "window");
    hop_ = hop_length;
    bins_ = n_fft_ / 2 + 1;
    synthesis_.resize(n_fft_);
    for (int j = 0; j < n_fft_; ++j) synthesis_[j] = window_[j] / static_cast<float>(n_fft_);
    plans_ = &plans_for(n_fft_);
}

std::int64_t StftKernel::n_frames(std::int64_t n_samples) const {
    if (center_) return 1 + n_samples / hop_;
    if (n_samples < n_fft_) return 0;
    return 1 + (n_samples - n_fft_) / hop_;
}

void StftKernel::check_signal(const float* y, std::int64_t n, const char* who) const {
    if (n == 0) throw std::invalid_argument(std::string(who) + ": the signal is empty");
    if (n < n_fft_)
        throw std::invalid_argument(std::string(who) + ": the signal has " + std::to_string(n) +
                                    " samples, shorter than one frame (n_fft=" + std::to_string(n_fft_) + ")");
    if (!all_in_range(y, n)) check_values(y, n, who, "signal");  // the slow pass says what and where
}

void StftKernel::load_frame(const float* y, std::int64_t n, std::int64_t start, float* frame) const {
    // Only [lo, hi) of the frame overlaps the signal; the rest is the zero padding.
    const std::int64_t lo = std::clamp<std::int64_t>(-start, 0, n_fft_);
    const std::int64_t hi = std::clamp<std::int64_t>(n - start, lo, n_fft_);
    std::fill(frame, frame + lo, 0.0f);
    multiply(window_.data() + lo, y + start + lo, frame + lo, static_cast<int>(hi - lo));
    std::fill(frame + hi, frame + n_fft_, 0.0f);
}

void StftKernel::stft(const float* y, std::int64_t n, cfloat* out) const {
    const std::int64_t frames = n_frames(n);
    AlignedBuffer<float> frame(n_fft_);
    AlignedBuffer<cfloat> spectrum(bins_);
    for (std::int64_t t = 0; t < frames; ++t) {
        load_frame(y, n, t * hop_ - pad(), frame.data());
        rfft(*plans_, frame.data(), spectrum.data());
        std::copy(spectrum.data(), spectrum.data() + bins_, out + t * bins_);
    }
}

void StftKernel::check_log_magnitude(float floor, int first_bin) const {
    check_log_floor(floor);
    if (first_bin < 0 || first_bin >= bins_)
        throw std::invalid_argument("first_bin must be from 0 to " + std::to_string(bins_ - 1) + ", got " +
                                    std::to_string(first_bin));
}

void StftKernel::log_magnitude(const float* y, std::int64_t n, float floor, int first_bin, float* out) const {
    check_log_magnitude(floor, first_bin);
    log_magnitude_frames(y, n, -pad(), n_frames(n), floor, first_bin, out);
}

void StftKernel::log_magnitude_frames(const float* y, std::int64_t n, std::int64_t first_start, std::int64_t frames,
                                      float floor, int first_bin, float* out) const {
    const int width = bins_ - first_bin;
    AlignedBuffer<float> frame(n_fft_);
    AlignedBuffer<cfloat> spectrum(bins_);
    AlignedBuffer<float> power(bins_);
    const float* spec = reinterpret_cast<const float*>(spectrum.data()) + 2 * first_bin;
    for (std::int64_t t = 0; t < frames; ++t) {
        load_frame(y, n, first_start + t * hop_, frame.data());
        rfft(*plans_, frame.data(), spectrum.data());
        log_magnitude_row(spec, power.data(), out + t * width, width, floor);
    }
}

std::int64_t StftKernel::istft_length(std::int64_t frames, std::int64_t length) const {
    if (length >= 0) return length;
    const std::int64_t padded = n_fft_ + hop_ * (frames - 1);
    return padded - 2 * pad();
}

std::vector<float> StftKernel::inverse_window_sumsquare(std::int64_t frames) const {
    const std::int64_t total = n_fft_ + hop_ * (frames - 1);
    std::vector<float> wss(total, 0.0f);
    for (std::int64_t t = 0; t < frames; ++t)
        for (int j = 0; j < n_fft_; ++j) wss[t * hop_ + j] += window_[j] * window_[j];
    const float tiny = std::numeric_limits<float>::min();
    for (auto& v : wss) v = v > tiny ? 1.0f / v : 0.0f;
    return wss;
}

void StftKernel::istft(const cfloat* S, std::int64_t frames, std::int64_t length, float* out) const {
    const std::int64_t total = n_fft_ + hop_ * (frames - 1);
    std::vector<float> padded(total, 0.0f);
    const std::vector<float> inv_wss = inverse_window_sumsquare(frames);
    AlignedBuffer<cfloat> spectrum(bins_);
    AlignedBuffer<float> frame(n_fft_);
    for (std::int64_t t = 0; t < frames; ++t) {
        std::copy(S + t * bins_, S + (t + 1) * bins_, spectrum.data());
        irfft(*plans_, spectrum.data(), frame.data());
        float* dst = padded.data() + t * hop_;
        for (int j = 0; j < n_fft_; ++j) dst[j] += synthesis_[j] * frame[j];
    }
    const std::int64_t n_out = istft_length(frames, length);
    for (std::int64_t i = 0; i < n_out; ++i) {
        const std::int64_t p = i + pad();
        out[i] = p < total ? padded[p] * inv_wss[p] : 0.0f;
    }
}

}  // namespace vcdsp
