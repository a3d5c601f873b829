// Short-time Fourier transform with librosa's framing: frame n starts at sample n*hop of the
// signal padded by n_fft/2 zeros on both sides when centred, spectra are rfft of window*frame.
// Spectrograms are stored frame-major: S[frame * bins + bin].
#pragma once

#include <cstdint>
#include <vector>

#include "fft_plan.hpp"

namespace vcdsp {

class StftKernel {
public:
    // window: n_fft samples (already zero-padded to n_fft when win_length < n_fft).
    StftKernel(std::vector<float> window, int hop_length, bool center);

    int n_fft() const { return n_fft_; }
    int hop_length() const { return hop_; }
    int bins() const { return bins_; }
    bool center() const { return center_; }
    const std::vector<float>& window() const { return window_; }
    const std::vector<float>& synthesis_window() const { return synthesis_; }
    const FftPlans& plans() const { return *plans_; }
    // Padding before sample 0: n_fft/2 when centred, else 0.
    int pad() const { return center_ ? n_fft_ / 2 : 0; }

    std::int64_t n_frames(std::int64_t n_samples) const;
    // Throws std::invalid_argument (ValueError in Python) for empty, too short, non-finite or too large
    // (beyond kMaxValue) input.
    void check_signal(const float* y, std::int64_t n, const char* who) const;
    // log_floor and first_bin of log_magnitude (and of the streaming extractor's constructor).
    void check_log_magnitude(float floor, int first_bin) const;

    void stft(const float* y, std::int64_t n, cfloat* out) const;
    // out[frame * (bins - first_bin) + k] = log(max(|S[frame, first_bin + k]|, floor))
    void log_magnitude(const float* y, std::int64_t n, float floor, int first_bin, float* out) const;
    // The same for `frames` frames whose windows start at first_start + t*hop of y (zeros outside y).
    void log_magnitude_frames(const float* y, std::int64_t n, std::int64_t first_start, std::int64_t frames,
                              float floor, int first_bin, float* out) const;

    // Output length of istft: `length` when >= 0, else what librosa.istft returns without it.
    std::int64_t istft_length(std::int64_t frames, std::int64_t length) const;
    void istft(const cfloat* S, std::int64_t frames, std::int64_t length, float* out) const;

    // Windowed frame starting at padded position `start` of y (zeros outside [0, n)).
    void load_frame(const float* y, std::int64_t n, std::int64_t start, float* frame) const;
    // 1 / (sum of squared windows over `frames` frames), 0 where that sum is ~0 (librosa's rule);
    // indexed in padded coordinates, length n_fft + hop*(frames-1).
    std::vector<float> inverse_window_sumsquare(std::int64_t frames) const;

private:
    std::vector<float> window_;
    std::vector<float> synthesis_;  // window / n_fft: FFTW's inverse is unnormalised
    int n_fft_, hop_, bins_;
    bool center_;
    const FftPlans* plans_;
};

}  // namespace vcdsp
