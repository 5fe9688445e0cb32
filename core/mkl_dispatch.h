// Which of MKL's CPU kernels this process runs, and why (docs/ARCHITECTURE.md, "MKL on AMD").
//
// LibTorch's PyPI build does its float32 matrix products (mm, addmm, bmm, linear) in a statically
// linked oneMKL. MKL picks its code path with mkl_serv_intel_cpu_true(): on a CPU whose vendor is
// not Intel it answers 0 and MKL runs a generic AVX2 path even where the CPU has AVX-512. On the
// project's AMD EPYC (Zen 5) machines that leaves much of sgemm's throughput unused (numbers in
// docs/BENCHMARKS.md, `slm bench train`). core/mkl_dispatch.cpp defines that function in every slm executable (slm_core's link
// options pull it in and export it, so libtorch_cpu.so's call binds to it) and answers 1 where
// the CPU has AVX-512 F/BW/DQ/VL, so MKL's own feature checks then choose its AVX-512 kernels.
// SLM_MKL_AVX512=0 in the environment keeps MKL's own answer. The same file also builds as
// libslm_mkl_preload.so, which `slm bench train` preloads into its Python baseline for a
// same-kernel comparison.
//
// Thread-safety: the decision is made once, on MKL's first query, and is immutable afterwards.
#pragma once

#include <string>

namespace slm {

struct MklDispatch {
  bool linked = false;      // this executable's definition is the one MKL calls
  bool cpu_avx512 = false;  // the CPU reports AVX-512 F, BW, DQ and VL
  bool disabled = false;    // SLM_MKL_AVX512=0
  int answer = 0;           // what mkl_serv_intel_cpu_true() returns to MKL
  // "forced" (answer 1 where MKL's own check said 0), "native" (MKL's own answer), or "off".
  std::string mode;
};

// The state above, for reports and logs. Makes the decision if MKL has not asked yet.
MklDispatch MklDispatchState();

// The rule, separate so that it can be tested on any CPU: `env` is SLM_MKL_AVX512 (nullptr when
// unset), `own` MKL's own answer. Returns the answer to give MKL.
int DecideMklIntelAnswer(const char* env, bool cpu_avx512, int own);

}  // namespace slm
