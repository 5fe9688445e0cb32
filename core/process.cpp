#include "core/process.h"

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "core/error.h"

namespace slm {
namespace {

int ExitCode(int status) { return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status); }

}  // namespace

pid_t StartChild(const ChildSpec& spec) {
  Check(!spec.argv.empty(), "StartChild: empty argv");
  int log = -1;
  if (!spec.log_path.empty()) {
    log = open(spec.log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    Check(log >= 0, "cannot open the log '", spec.log_path, "': ", std::strerror(errno));
  }
  std::fflush(nullptr);  // buffered output is not written twice by the child
  const pid_t pid = fork();
  if (pid < 0) {
    const int error = errno;
    if (log >= 0) close(log);
    throw Error(Str("fork failed: ", std::strerror(error)));
  }
  if (pid == 0) {
    if (log >= 0) {
      dup2(log, STDOUT_FILENO);
      dup2(log, STDERR_FILENO);
    }
    for (const auto& [key, value] : spec.env) setenv(key.c_str(), value.c_str(), 1);
    std::vector<char*> args;
    for (const std::string& a : spec.argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execv(spec.executable.c_str(), args.data());
    std::fprintf(stderr, "exec %s failed: %s\n", spec.executable.c_str(), std::strerror(errno));
    _exit(127);
  }
  if (log >= 0) close(log);
  return pid;
}

std::pair<pid_t, int> WaitAnyChild() {
  int status = 0;
  pid_t done;
  do {
    done = wait(&status);
  } while (done < 0 && errno == EINTR);
  return {done, done < 0 ? -1 : ExitCode(status)};
}

}  // namespace slm
