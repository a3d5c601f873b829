// Fast Griffin-Lim (Perraudin, Balazs & Sondergaard 2013) on frame-major spectrograms, with the
// update written as librosa writes it: angles = rebuilt - momentum/(1+momentum) * previous rebuilt,
// which is FGLA's t_n = c_n + momentum*(c_n - c_{n-1}) up to a positive factor.
#pragma once

#include <cstdint>

#include "stft.hpp"

namespace vcdsp {

// Scratch buffers for one projection of one frame; one set per call or per object, never shared
// between threads.
struct FrameScratch {
    explicit FrameScratch(int n_fft) : frame(n_fft), spectrum(n_fft / 2 + 1) {}
    AlignedBuffer<float> frame;
    AlignedBuffer<cfloat> spectrum;
};

// dst[j] += synthesis_window[j] * irfft(mag * angle)[j], j < n_fft
void overlap_add_frame(const StftKernel& k, const float* mag, const cfloat* angle, FrameScratch& s, float* dst);

// Analyse the windowed frame at `frame_start` of `signal` and move `angle` towards its phase:
// angle = unit(rebuilt - beta*previous); previous = rebuilt.
void update_frame_phase(const StftKernel& k, const float* frame_start, float beta, FrameScratch& s,
                        cfloat* angle, cfloat* previous);

// Number of signal samples griffinlim returns; checks that `length` (when >= 0) fits `frames`.
std::int64_t griffinlim_length(const StftKernel& k, std::int64_t frames, std::int64_t length);

// Scale each phasor to length one (zeros stay zero): what griffinlim expects of its initial phases.
void unit_phasors(cfloat* phasors, std::int64_t n);

// n_iter >= 0 and momentum in [0, 1]; griffinlim calls it first.
void check_griffinlim(int n_iter, float momentum);

// mag, angles: (frames, bins); angles holds the initial phases as unit phasors and is overwritten
// with the final ones. out: griffinlim_length(...) samples.
void griffinlim(const StftKernel& k, const float* mag, std::int64_t frames, cfloat* angles, int n_iter,
                float momentum, std::int64_t length, float* out);

}  // namespace vcdsp
