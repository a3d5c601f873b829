// Block-by-block versions of the feature extractor and of Griffin-Lim. Positions below are in the
// centred STFT's padded coordinates: p = signal sample + pad, frame t's window covers [t*hop, t*hop+n_fft).
// Each object holds its own buffers; a mutex serialises calls on one object (a push from an audio
// thread and a reset from another stay consistent), different objects run in parallel.
#pragma once

#include <cstdint>
#include <mutex>
#include <vector>

#include "griffinlim.hpp"
#include "pghi.hpp"
#include "stft.hpp"

namespace vcdsp {

// Frames of the whole-signal log-magnitude, emitted as soon as their window is complete. With
// centring, frame t needs signal samples up to t*hop + n_fft/2 - 1; the first frames see the
// leading zero padding exactly as the whole-signal transform does, and flush() pads the end.
class StreamingLogMagnitude {
public:
    StreamingLogMagnitude(std::vector<float> window, int hop_length, bool center, float floor, int first_bin);

    int width() const { return kernel_.bins() - first_bin_; }
    std::int64_t samples_pushed() const { return samples_pushed_; }
    std::int64_t frames_emitted() const { return frames_emitted_; }
    // The frames completed by these samples, rows of width() values (possibly none).
    std::vector<float> push(const float* x, std::int64_t n);
    // The frames that need the end padding; then starts a new stream.
    std::vector<float> flush();
    void reset();

private:
    StftKernel kernel_;
    float floor_;
    int first_bin_;
    std::vector<float> pending_;  // padded signal from the next frame's start on
    std::int64_t samples_pushed_ = 0, frames_emitted_ = 0;
    std::mutex mutex_;
    void reset_locked();
    std::int64_t frames_after_push(std::int64_t n) const;
    std::int64_t frames_at_flush() const;
};

// RTISI-LA (Zhu, Beauregard & Wyse 2007) with fast Griffin-Lim updates: the newest `lookahead`+1
// frames are re-estimated n_iter times whenever a frame arrives, older frames are committed (their
// phase fixed, their samples final). A new frame's phase starts from PGHI integrated from the frame
// before it. After frames 0..F-1 have been pushed, signal samples [0, final_samples_after(F)) are
// out; flush() delivers the rest up to hop*(F-1) samples (librosa.istft's length), the same
// samples, in the same places, as whole-utterance griffinlim of those frames.
class StreamingGriffinLim {
public:
    StreamingGriffinLim(std::vector<float> window, int hop_length, bool center, int n_iter, float momentum,
                        int lookahead, double gamma);

    int bins() const { return kernel_.bins(); }
    int lookahead() const { return lookahead_; }
    std::int64_t frames_pushed() const { return pushed_; }
    std::int64_t samples_emitted() const { return emit_p_ - kernel_.pad(); }
    std::int64_t final_samples_after(std::int64_t frames) const;

    // mag: k frames of bins() values (frame-major). Returns the samples that became final.
    std::vector<float> push(const float* mag, std::int64_t k);
    std::vector<float> flush();  // then starts a new stream
    void reset();

private:
    void add_frame(const float* mag);
    void iterate(bool at_end);
    void commit_oldest();
    void emit_until(std::int64_t p_end, std::vector<float>& out);

    StftKernel kernel_;
    int n_iter_, lookahead_, bins_;
    float beta_;
    double gamma_;
    std::int64_t pushed_ = 0, committed_ = 0, emit_p_ = 0;
    // Uncommitted frames, oldest first: magnitudes, current phasors, previous rebuilt spectra (momentum).
    std::vector<float> mag_;
    std::vector<cfloat> angle_, previous_;
    // Log-magnitude and phase of the newest frame: PGHI's seed for the next one.
    std::vector<float> seed_logmag_;
    std::vector<float> seed_phase_;
    // Committed frames' overlap-add and squared-window sums over padded positions [base_, base_+size).
    std::int64_t base_ = 0;
    std::vector<float> acc_, wss_;
    std::vector<float> region_, scale_;  // the uncommitted frames' span, per iteration
    std::vector<float> pghi_logmag_, pghi_phase_;
    std::vector<std::uint8_t> pghi_known_;
    PghiWorkspace pghi_workspace_;
    FrameScratch scratch_;
    std::mutex mutex_;
    void reset_locked();
};

}  // namespace vcdsp
