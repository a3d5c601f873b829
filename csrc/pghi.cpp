#include "pghi.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "checks.hpp"

namespace vcdsp {

namespace {
constexpr double kPi = 3.14159265358979323846;
}

double pghi_gamma(const char* window, int win_length) {
    const double L2 = static_cast<double>(win_length) * win_length;
    if (std::strcmp(window, "hann") == 0) return 0.25645 * L2;
    if (std::strcmp(window, "hamming") == 0) return 0.29794 * L2;
    if (std::strcmp(window, "blackman") == 0) return 0.17954 * L2;
    return 0.0;
}

void check_pghi(int bins, int n_fft, int hop, double gamma, float tolerance) {
    check_n_fft(n_fft);
    if (bins != n_fft / 2 + 1)
        throw std::invalid_argument("pghi: " + std::to_string(bins) + " bins, but n_fft=" + std::to_string(n_fft) +
                                    " gives " + std::to_string(n_fft / 2 + 1));
    check_hop_length(hop);
    check_gamma(gamma);
    check_tolerance(tolerance);
}

namespace {

// For the Gaussian window the log-magnitude and the phase obey Cauchy-Riemann-like relations:
//   dphi/dtime = 2*pi*freq + (1/gamma) dlog|S|/dfreq,   dphi/dfreq = -gamma dlog|S|/dtime.
// Per hop and per bin (freq in cycles/sample = bin/n_fft). The extra pi per bin comes from our
// frames' time origin at the window's start instead of its centre (S = (-1)^bin * S_centred).
void phase_gradients(const float* logmag, std::int64_t frames, int bins, int n_fft, int hop, double gamma,
                     std::vector<float>& time_step, std::vector<float>& freq_step) {
    auto s = [&](std::int64_t t, int b) { return static_cast<double>(logmag[t * bins + b]); };
    time_step.resize(frames * bins);
    freq_step.resize(frames * bins);
    for (std::int64_t t = 0; t < frames; ++t) {
        const std::int64_t t0 = t > 0 ? t - 1 : t, t1 = t + 1 < frames ? t + 1 : t;
        const double dt = t1 > t0 ? static_cast<double>(t1 - t0) : 1.0;
        for (int b = 0; b < bins; ++b) {
            const int b0 = b > 0 ? b - 1 : b, b1 = b + 1 < bins ? b + 1 : b;
            const double ds_db = (s(t, b1) - s(t, b0)) / static_cast<double>(b1 - b0);
            const double ds_dt = (s(t1, b) - s(t0, b)) / dt;
            time_step[t * bins + b] =
                static_cast<float>(hop * (2.0 * kPi * b / n_fft + (static_cast<double>(n_fft) / gamma) * ds_db));
            freq_step[t * bins + b] = static_cast<float>(kPi - gamma / (static_cast<double>(n_fft) * hop) * ds_dt);
        }
    }
}

// "Loudest first" only needs to be approximately true: a bucket queue over quantised log-magnitude is
// several times faster than a binary heap and orders bins to within (loudest - threshold) / kLevels nepers.
constexpr int kLevels = 1024;

class LoudnessQueue {
public:
    LoudnessQueue(const float* logmag, float threshold, float loudest, std::vector<std::vector<std::int64_t>>& buckets)
        : logmag_(logmag), threshold_(threshold), buckets_(buckets) {
        const float span = loudest - threshold;
        scale_ = span > 0.0f ? (kLevels - 1) / span : 0.0f;
        buckets_.resize(kLevels);
        for (auto& bucket : buckets_) bucket.clear();
    }
    int level(std::int64_t i) const {
        const float l = (logmag_[i] - threshold_) * scale_;
        return l <= 0.0f ? 0 : (l >= kLevels - 1 ? kLevels - 1 : static_cast<int>(l));
    }
    void push(std::int64_t i) {
        const int l = level(i);
        buckets_[l].push_back(i);
        occupied_[l / 64] |= std::uint64_t{1} << (l % 64);
    }
    // The index of a bin in the loudest non-empty bucket (removed from the queue), or -1.
    std::int64_t pop() {
        int top = -1;
        for (int w = kLevels / 64 - 1; w >= 0 && top < 0; --w)
            if (occupied_[w]) top = w * 64 + 63 - __builtin_clzll(occupied_[w]);
        if (top < 0) return -1;
        const std::int64_t i = buckets_[top].back();
        buckets_[top].pop_back();
        if (buckets_[top].empty()) occupied_[top / 64] &= ~(std::uint64_t{1} << (top % 64));
        return i;
    }

private:
    const float* logmag_;
    float threshold_, scale_;
    std::vector<std::vector<std::int64_t>>& buckets_;
    std::uint64_t occupied_[kLevels / 64] = {};  // one bit per non-empty bucket
};

}  // namespace

void pghi(const float* logmag, std::int64_t frames, int bins, int n_fft, int hop, double gamma, float* phase,
          const std::uint8_t* known, float tolerance, PghiWorkspace* workspace) {
    check_pghi(bins, n_fft, hop, gamma, tolerance);
    PghiWorkspace local;
    PghiWorkspace& ws = workspace ? *workspace : local;
    const std::int64_t n = frames * bins;
    phase_gradients(logmag, frames, bins, n_fft, hop, gamma, ws.time_step, ws.freq_step);
    const std::vector<float>& time_step = ws.time_step;
    const std::vector<float>& freq_step = ws.freq_step;

    const float loudest = *std::max_element(logmag, logmag + n);
    const float threshold = loudest + std::log(tolerance);
    LoudnessQueue queue(logmag, threshold, loudest, ws.buckets);

    std::vector<double>& acc = ws.acc;  // double: the unwrapped phase grows by up to hop*pi per frame
    std::vector<std::uint8_t>& done = ws.done;
    std::vector<int>& level_count = ws.level_count;
    acc.assign(n, 0.0);
    done.assign(n, 0);
    level_count.assign(kLevels + 1, 0);
    for (std::int64_t i = 0; i < n; ++i) {
        if (known && known[i]) {
            acc[i] = phase[i];
            done[i] = 1;
            queue.push(i);
        } else if (logmag[i] < threshold) {
            done[i] = 1;  // acc stays 0: too quiet for its gradient to mean anything
        } else {
            ++level_count[kLevels - 1 - queue.level(i)];
        }
    }
    // Bins still to reach, loudest first (counting sort): seeds for islands the integration misses.
    for (int l = 1; l <= kLevels; ++l) level_count[l] += level_count[l - 1];
    std::vector<std::int64_t>& by_loudness = ws.by_loudness;
    by_loudness.resize(level_count[kLevels]);
    for (std::int64_t i = n - 1; i >= 0; --i)
        if (!done[i]) by_loudness[--level_count[kLevels - 1 - queue.level(i)]] = i;
    std::size_t next_seed = 0;

    auto reach = [&](std::int64_t to, double value) {
        if (done[to]) return;
        acc[to] = value;
        done[to] = 1;
        queue.push(to);
    };
    for (;;) {
        for (std::int64_t i = queue.pop(); i >= 0; i = queue.pop()) {
            const std::int64_t t = i / bins;
            const int b = static_cast<int>(i % bins);
            const double here = acc[i];
            // Trapezoidal integration of the gradient towards each not-yet-reached neighbour.
            if (t + 1 < frames) reach(i + bins, here + 0.5 * (time_step[i] + time_step[i + bins]));
            if (t > 0) reach(i - bins, here - 0.5 * (time_step[i] + time_step[i - bins]));
            if (b + 1 < bins) reach(i + 1, here + 0.5 * (freq_step[i] + freq_step[i + 1]));
            if (b > 0) reach(i - 1, here - 0.5 * (freq_step[i] + freq_step[i - 1]));
        }
        // Start a new island at the loudest bin not reached yet.
        while (next_seed < by_loudness.size() && done[by_loudness[next_seed]]) ++next_seed;
        if (next_seed == by_loudness.size()) break;
        const std::int64_t seed = by_loudness[next_seed];
        done[seed] = 1;
        acc[seed] = 0.0;
        queue.push(seed);
    }
    const double turn = 2.0 * kPi;
    for (std::int64_t i = 0; i < n; ++i) phase[i] = static_cast<float>(acc[i] - turn * std::nearbyint(acc[i] / turn));
}

}  // namespace vcdsp
