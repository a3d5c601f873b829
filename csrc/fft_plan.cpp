#include "fft_plan.hpp"

#include <map>
#include <mutex>
#include <stdexcept>
#include <string>

namespace vcdsp {

const FftPlans& plans_for(int n_fft) {
    static std::mutex planner_lock;
    static std::map<int, FftPlans> plans;  // node-based: references survive later inserts

    std::lock_guard<std::mutex> guard(planner_lock);
    auto found = plans.find(n_fft);
    if (found != plans.end()) return found->second;

    if (n_fft < 2) throw std::invalid_argument("n_fft must be at least 2, got " + std::to_string(n_fft));
    AlignedBuffer<float> real(n_fft);
    AlignedBuffer<cfloat> spectrum(n_fft / 2 + 1);
    auto* spec = reinterpret_cast<fftwf_complex*>(spectrum.data());
    // FFTW_MEASURE overwrites the arrays while timing; these are scratch arrays only.
    FftPlans made{n_fft,
                  fftwf_plan_dft_r2c_1d(n_fft, real.data(), spec, FFTW_ESTIMATE),
                  fftwf_plan_dft_c2r_1d(n_fft, spec, real.data(), FFTW_ESTIMATE | FFTW_DESTROY_INPUT)};
    if (!made.forward || !made.inverse)
        throw std::runtime_error("FFTW could not plan a transform of size " + std::to_string(n_fft));
    return plans.emplace(n_fft, made).first->second;
}

}  // namespace vcdsp
