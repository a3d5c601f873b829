// Marks a hot loop's function for an extra AVX2/FMA clone chosen at load time (GCC ifunc); the
// build itself targets baseline x86-64, so the module runs on any x86-64 machine.
#pragma once

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__linux__)
#define VCDSP_SIMD_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define VCDSP_SIMD_CLONES
#endif
