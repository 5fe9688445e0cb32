// Child processes running this executable again (`slm` sub-commands): the cells of `slm ablate`,
// the `prepare:` steps of a multi-stage config, the ranks of `slm train --nproc`. A child is its own
// process so that one that crashes (an abort, a signal, out of memory) costs only its own result.
// Thread-safety: call from one thread (the wait functions reap any child of this process).
#pragma once

#include <sys/types.h>

#include <map>
#include <string>
#include <utility>
#include <vector>

namespace slm {

struct ChildSpec {
  std::vector<std::string> argv;              // argv[0] included
  std::map<std::string, std::string> env;     // set on top of this process's environment
  std::string log_path;                       // stdout and stderr appended here ("" = inherited)
  std::string executable = "/proc/self/exe";  // another binary (tests run the slm executable)
};

// Forks and execs; slm::Error when fork fails or the log cannot be opened (an exec failure shows as
// exit code 127 with the reason in the log).
pid_t StartChild(const ChildSpec& spec);
// Blocks until one child ends: its pid and exit code (128 + signal number for a signal); pid -1
// when no child is left.
std::pair<pid_t, int> WaitAnyChild();

}  // namespace slm
