// FFTW plans shared by every kernel: made once per transform size, reused from any thread.
#pragma once

#include <fftw3.h>

#include <complex>
#include <cstddef>
#include <new>
#include <utility>

namespace vcdsp {

using cfloat = std::complex<float>;

struct FftPlans {
    int n_fft;
    fftwf_plan forward;  // real n_fft -> complex n_fft/2+1, out of place
    fftwf_plan inverse;  // complex n_fft/2+1 -> real n_fft, out of place, destroys its input
};

// Creating a plan is not thread-safe in FFTW, executing one with the new-array API is:
// plans are created under a lock and never destroyed, so the reference stays valid.
const FftPlans& plans_for(int n_fft);

// Buffers from fftwf_malloc have the alignment the plans were made for, which the
// new-array execute functions require.
template <class T>
class AlignedBuffer {
public:
    AlignedBuffer() = default;
    explicit AlignedBuffer(std::size_t n) : size_(n) {
        data_ = static_cast<T*>(fftwf_malloc(sizeof(T) * (n ? n : 1)));
        if (!data_) throw std::bad_alloc();
    }
    AlignedBuffer(const AlignedBuffer&) = delete;
    AlignedBuffer& operator=(const AlignedBuffer&) = delete;
    AlignedBuffer(AlignedBuffer&& other) noexcept
        : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}
    AlignedBuffer& operator=(AlignedBuffer&& other) noexcept {
        std::swap(data_, other.data_);
        std::swap(size_, other.size_);
        return *this;
    }
    ~AlignedBuffer() { fftwf_free(data_); }

    T* data() { return data_; }
    const T* data() const { return data_; }
    std::size_t size() const { return size_; }
    T& operator[](std::size_t i) { return data_[i]; }
    const T& operator[](std::size_t i) const { return data_[i]; }

private:
    T* data_ = nullptr;
    std::size_t size_ = 0;
};

inline void rfft(const FftPlans& p, float* in, cfloat* out) {
    fftwf_execute_dft_r2c(p.forward, in, reinterpret_cast<fftwf_complex*>(out));
}

// Unnormalised: the caller divides by n_fft (folded into the synthesis window).
inline void irfft(const FftPlans& p, cfloat* in, float* out) {
    fftwf_execute_dft_c2r(p.inverse, reinterpret_cast<fftwf_complex*>(in), out);
}

}  // namespace vcdsp
