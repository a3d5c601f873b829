// Phase Gradient Heap Integration (Prusa, Balazs & Sondergaard 2017): a phase estimate from the
// STFT magnitude alone, for a window treated as the Gaussian exp(-pi t^2 / gamma).
#pragma once

#include <cstdint>
#include <vector>

namespace vcdsp {

// Gaussian-equivalent gamma (samples^2) of common windows of length win_length (the paper's table).
double pghi_gamma(const char* window, int win_length);  // 0 when unknown

// Buffers of one integration, kept by callers that integrate again and again (streaming), so that
// steady-state calls allocate nothing.
struct PghiWorkspace {
    std::vector<float> time_step, freq_step;
    std::vector<double> acc;
    std::vector<std::uint8_t> done;
    std::vector<std::vector<std::int64_t>> buckets;
    std::vector<int> level_count;
    std::vector<std::int64_t> by_loudness;
};

// n_fft even, bins = n_fft/2 + 1, hop >= 1, gamma positive and finite, tolerance in (0, 1); pghi checks first.
void check_pghi(int bins, int n_fft, int hop, double gamma, float tolerance);

// logmag: (frames, bins) natural log of the magnitude of an STFT with our framing (frame t's window
// starts at t*hop, spectra are rfft of the window-sized frame).
// phase: (frames, bins) radians. Bins with known[i] != 0 keep their phase and seed the integration
// (known may be null: then the loudest bin is the seed, at phase 0). Bins quieter than the loudest
// by more than `tolerance` (relative magnitude) are not integrated and get phase 0.
// On return every phase lies in [-pi, pi].
void pghi(const float* logmag, std::int64_t frames, int bins, int n_fft, int hop, double gamma, float* phase,
          const std::uint8_t* known, float tolerance = 1e-5f, PghiWorkspace* workspace = nullptr);

}  // namespace vcdsp
