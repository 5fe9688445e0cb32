// MKL's vendor check, answered by the CPU's features (core/mkl_dispatch.h). Only system headers:
// this file also builds, without LibTorch, as the preload library for the Python baseline.
#include "core/mkl_dispatch.h"

#include <dlfcn.h>

#include <cstdlib>
#include <cstring>

extern "C" int mkl_serv_intel_cpu_true();

namespace slm {
namespace {

bool CpuHasAvx512() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
#else
  return false;
#endif
}

using IntelCpuTrue = int (*)();

// SLM_MKL_AVX512=0: leave MKL's answer alone.
bool Disabled(const char* env) { return env != nullptr && std::strcmp(env, "0") == 0; }

// MKL's own definition: the next one after this object in the lookup order (libtorch_cpu.so's),
// or none when this process has no MKL.
IntelCpuTrue NextDefinition() {
  return reinterpret_cast<IntelCpuTrue>(dlsym(RTLD_NEXT, "mkl_serv_intel_cpu_true"));
}

struct Decision {
  MklDispatch state;
  Decision() {
    state.cpu_avx512 = CpuHasAvx512();
    const char* env = std::getenv("SLM_MKL_AVX512");
    state.disabled = Disabled(env);
    const IntelCpuTrue next = NextDefinition();
    const int own = next != nullptr ? next() : 0;
    state.answer = DecideMklIntelAnswer(env, state.cpu_avx512, own);
    state.mode = state.disabled ? "off" : (state.answer != own ? "forced" : "native");
  }
};

const Decision& TheDecision() {
  static const Decision decision;  // thread-safe initialisation; MKL may ask from any thread
  return decision;
}

}  // namespace

int DecideMklIntelAnswer(const char* env, bool cpu_avx512, int own) {
  return !Disabled(env) && cpu_avx512 ? 1 : own;
}

MklDispatch MklDispatchState() {
  // Whether MKL binds to this definition: the process-wide lookup must find ours, not MKL's.
  MklDispatch state = TheDecision().state;
  void* bound = dlsym(RTLD_DEFAULT, "mkl_serv_intel_cpu_true");
  state.linked = bound == reinterpret_cast<void*>(&mkl_serv_intel_cpu_true);
  return state;
}

}  // namespace slm

// The function MKL calls (through libtorch_cpu.so's PLT, so the executable's exported definition
// takes precedence over MKL's own). slm_mkl_dispatch_anchor lets the linker be told to pull this
// object out of libslm_core.a in every executable (core/CMakeLists.txt).
extern "C" {
__attribute__((visibility("default"))) int mkl_serv_intel_cpu_true() {
  return slm::TheDecision().state.answer;
}
__attribute__((visibility("default"))) int slm_mkl_dispatch_anchor = 0;
}
