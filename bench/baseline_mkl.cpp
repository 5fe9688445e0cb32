// The benchmarks' --baseline-mkl / --mkl-preload options (bench_util.h). Its own file because the
// preload library's build path comes in as a compile definition (bench/CMakeLists.txt).
#include "bench/bench_util.h"

namespace slm::bench {

void AddBaselineMklOptions(CLI::App* cmd, std::string* mode, std::string* preload) {
  *preload = SLM_MKL_PRELOAD_PATH;
  cmd->add_option("--baseline-mkl", *mode,
                  "where slm forces MKL's AVX-512 kernels (core/mkl_dispatch.h): run the Python baseline stock, "
                  "with the same MKL kernels (LD_PRELOAD of --mkl-preload), or both")
      ->capture_default_str();
  cmd->add_option("--mkl-preload", *preload, "libslm_mkl_preload.so for the same-kernel baseline")
      ->capture_default_str();
}

}  // namespace slm::bench
