#include "streaming.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

#include "checks.hpp"
#include "pghi.hpp"

namespace vcdsp {

// --- StreamingLogMagnitude ----------------------------------------------------------------------

StreamingLogMagnitude::StreamingLogMagnitude(std::vector<float> window, int hop_length, bool center, float floor,
                                             int first_bin)
    : kernel_(std::move(window), hop_length, center), floor_(floor), first_bin_(first_bin) {
    kernel_.check_log_magnitude(floor, first_bin);
    reset_locked();
}

void StreamingLogMagnitude::reset() {
    std::lock_guard<std::mutex> guard(mutex_);
    reset_locked();
}

void StreamingLogMagnitude::reset_locked() {
    pending_.assign(kernel_.pad(), 0.0f);  // the centred transform's leading zeros
    samples_pushed_ = 0;
    frames_emitted_ = 0;
}

std::int64_t StreamingLogMagnitude::frames_after_push(std::int64_t n) const {
    const std::int64_t available = static_cast<std::int64_t>(pending_.size()) + n;
    if (available < kernel_.n_fft()) return 0;
    return 1 + (available - kernel_.n_fft()) / kernel_.hop_length();
}

std::int64_t StreamingLogMagnitude::frames_at_flush() const {
    if (!kernel_.center() || samples_pushed_ == 0) return 0;
    return std::max<std::int64_t>(0, kernel_.n_frames(samples_pushed_) - frames_emitted_);
}

std::vector<float> StreamingLogMagnitude::push(const float* x, std::int64_t n) {
    std::lock_guard<std::mutex> guard(mutex_);
    check_values(x, n, "StreamingLogMagnitude.push", "block");
    const std::int64_t frames = frames_after_push(n);
    pending_.insert(pending_.end(), x, x + n);
    samples_pushed_ += n;
    const auto size = static_cast<std::int64_t>(pending_.size());
    std::vector<float> out(static_cast<std::size_t>(frames) * width());
    kernel_.log_magnitude_frames(pending_.data(), size, 0, frames, floor_, first_bin_, out.data());
    frames_emitted_ += frames;
    pending_.erase(pending_.begin(), pending_.begin() + frames * kernel_.hop_length());
    return out;
}

std::vector<float> StreamingLogMagnitude::flush() {
    std::lock_guard<std::mutex> guard(mutex_);
    const std::int64_t frames = frames_at_flush();
    const auto size = static_cast<std::int64_t>(pending_.size());  // zeros beyond it: the end padding
    std::vector<float> out(static_cast<std::size_t>(frames) * width());
    kernel_.log_magnitude_frames(pending_.data(), size, 0, frames, floor_, first_bin_, out.data());
    reset_locked();
    return out;
}

// --- StreamingGriffinLim ------------------------------------------------------------------------

StreamingGriffinLim::StreamingGriffinLim(std::vector<float> window, int hop_length, bool center, int n_iter,
                                         float momentum, int lookahead, double gamma)
    : kernel_(std::move(window), hop_length, center),
      n_iter_(n_iter),
      lookahead_(lookahead),
      bins_(kernel_.bins()),
      beta_(momentum / (1.0f + momentum)),
      gamma_(gamma),
      scratch_(kernel_.n_fft()) {
    check_n_iter(n_iter);
    check_lookahead(lookahead);
    check_momentum(momentum);
    check_gamma(gamma);
    reset_locked();
}

void StreamingGriffinLim::reset() {
    std::lock_guard<std::mutex> guard(mutex_);
    reset_locked();
}

void StreamingGriffinLim::reset_locked() {
    pushed_ = committed_ = 0;
    emit_p_ = kernel_.pad();
    base_ = 0;
    mag_.clear();
    angle_.clear();
    previous_.clear();
    acc_.clear();
    wss_.clear();
    seed_logmag_.assign(bins_, 0.0f);
    seed_phase_.assign(bins_, 0.0f);
}

std::int64_t StreamingGriffinLim::final_samples_after(std::int64_t frames) const {
    const std::int64_t committed = frames - lookahead_;
    return std::max<std::int64_t>(0, committed * kernel_.hop_length() - kernel_.pad());
}

void StreamingGriffinLim::add_frame(const float* mag) {
    const float tiny = std::numeric_limits<float>::min();
    const bool first = pushed_ == 0;
    const int rows = first ? 1 : 2;  // the previous frame (known phase) seeds the new one
    pghi_logmag_.resize(static_cast<std::size_t>(rows) * bins_);
    pghi_phase_.resize(pghi_logmag_.size());
    pghi_known_.assign(pghi_logmag_.size(), 0);
    float* new_logmag = pghi_logmag_.data() + (rows - 1) * bins_;
    for (int b = 0; b < bins_; ++b) new_logmag[b] = std::log(std::max(mag[b], tiny));
    if (!first) {
        std::copy(seed_logmag_.begin(), seed_logmag_.end(), pghi_logmag_.begin());
        std::copy(seed_phase_.begin(), seed_phase_.end(), pghi_phase_.begin());
        std::fill(pghi_known_.begin(), pghi_known_.begin() + bins_, 1);
    }
    pghi(pghi_logmag_.data(), rows, bins_, kernel_.n_fft(), kernel_.hop_length(), gamma_, pghi_phase_.data(),
         pghi_known_.data(), 1e-5f, &pghi_workspace_);
    const float* phase = pghi_phase_.data() + (rows - 1) * bins_;
    mag_.insert(mag_.end(), mag, mag + bins_);
    for (int b = 0; b < bins_; ++b) angle_.emplace_back(std::cos(phase[b]), std::sin(phase[b]));
    previous_.insert(previous_.end(), bins_, cfloat(0.0f, 0.0f));
    std::copy(new_logmag, new_logmag + bins_, seed_logmag_.begin());
    ++pushed_;
}

void StreamingGriffinLim::iterate(bool at_end) {
    const int hop = kernel_.hop_length(), n_fft = kernel_.n_fft(), pad = kernel_.pad();
    const std::int64_t active = pushed_ - committed_;
    if (active <= 0) return;
    const std::int64_t r0 = committed_ * hop, r1 = (pushed_ - 1) * hop + n_fft, span = r1 - r0;
    if (base_ + static_cast<std::int64_t>(acc_.size()) < r1) {
        acc_.resize(r1 - base_, 0.0f);
        wss_.resize(r1 - base_, 0.0f);
    }
    // Normalisation by all frames' squared windows, zero where whole-utterance Griffin-Lim
    // zeroes the signal: before sample 0 and, once the end is known, after the last sample.
    const std::int64_t end = at_end ? pad + kernel_.istft_length(pushed_, -1) : r1;
    scale_.assign(wss_.begin() + (r0 - base_), wss_.begin() + (r1 - base_));
    const float* window = kernel_.window().data();
    for (std::int64_t a = 0; a < active; ++a)
        for (int j = 0; j < n_fft; ++j) scale_[a * hop + j] += window[j] * window[j];
    const float tiny = std::numeric_limits<float>::min();
    for (std::int64_t i = 0; i < span; ++i) {
        const std::int64_t p = r0 + i;
        scale_[i] = (p >= pad && p < end && scale_[i] > tiny) ? 1.0f / scale_[i] : 0.0f;
    }
    region_.resize(span);
    const float* committed_part = acc_.data() + (r0 - base_);
    for (int it = 0; it < n_iter_; ++it) {
        std::copy(committed_part, committed_part + span, region_.begin());
        for (std::int64_t a = 0; a < active; ++a)
            overlap_add_frame(kernel_, mag_.data() + a * bins_, angle_.data() + a * bins_, scratch_,
                              region_.data() + a * hop);
        for (std::int64_t i = 0; i < span; ++i) region_[i] *= scale_[i];
        for (std::int64_t a = 0; a < active; ++a)
            update_frame_phase(kernel_, region_.data() + a * hop, beta_, scratch_, angle_.data() + a * bins_,
                               previous_.data() + a * bins_);
    }
    const cfloat* newest = angle_.data() + (active - 1) * bins_;
    for (int b = 0; b < bins_; ++b) seed_phase_[b] = std::arg(newest[b]);
}

void StreamingGriffinLim::commit_oldest() {
    const int hop = kernel_.hop_length(), n_fft = kernel_.n_fft();
    const std::int64_t at = committed_ * hop - base_;
    overlap_add_frame(kernel_, mag_.data(), angle_.data(), scratch_, acc_.data() + at);
    const float* window = kernel_.window().data();
    for (int j = 0; j < n_fft; ++j) wss_[at + j] += window[j] * window[j];
    mag_.erase(mag_.begin(), mag_.begin() + bins_);
    angle_.erase(angle_.begin(), angle_.begin() + bins_);
    previous_.erase(previous_.begin(), previous_.begin() + bins_);
    ++committed_;
}

void StreamingGriffinLim::emit_until(std::int64_t p_end, std::vector<float>& out) {
    const float tiny = std::numeric_limits<float>::min();
    for (; emit_p_ < p_end; ++emit_p_) {
        const std::int64_t i = emit_p_ - base_;
        const bool inside = i < static_cast<std::int64_t>(acc_.size());
        out.push_back(inside && wss_[i] > tiny ? acc_[i] / wss_[i] : 0.0f);
    }
    // Nothing before the next uncommitted frame or the next sample to emit is needed again.
    const std::int64_t keep_from = std::min(emit_p_, committed_ * kernel_.hop_length());
    const std::int64_t drop = std::min<std::int64_t>(keep_from - base_, acc_.size());
    if (drop > 0) {
        acc_.erase(acc_.begin(), acc_.begin() + drop);
        wss_.erase(wss_.begin(), wss_.begin() + drop);
        base_ += drop;
    }
}

std::vector<float> StreamingGriffinLim::push(const float* mag, std::int64_t k) {
    check_values(mag, k * bins_, "StreamingGriffinLim.push", "magnitude", true);
    std::lock_guard<std::mutex> guard(mutex_);
    std::vector<float> out;
    out.reserve(static_cast<std::size_t>(k) * kernel_.hop_length());
    for (std::int64_t t = 0; t < k; ++t) {
        add_frame(mag + t * bins_);
        iterate(false);
        while (pushed_ - committed_ > lookahead_) commit_oldest();
        emit_until(committed_ * kernel_.hop_length(), out);
    }
    return out;
}

std::vector<float> StreamingGriffinLim::flush() {
    std::lock_guard<std::mutex> guard(mutex_);
    std::vector<float> out;
    if (pushed_ == 0) return out;
    iterate(true);
    while (committed_ < pushed_) commit_oldest();
    emit_until(kernel_.pad() + kernel_.istft_length(pushed_, -1), out);
    reset_locked();
    return out;
}

}  // namespace vcdsp
