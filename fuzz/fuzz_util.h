// Shared by the libFuzzer targets in fuzz/ (docs/ARCHITECTURE.md, "Fuzzing").
//
// The contract every target checks: a parser given any bytes either returns or throws slm::Error
// whose message names the input (the file name, `where`, or the config source the target passed
// in). Anything else is a finding that libFuzzer records: a crash, a sanitizer report, another
// exception escaping (reported here with its type and message, then abort()), an error message
// that does not say where the problem is, a broken invariant (SLM_FUZZ_ASSERT), a hang (-timeout)
// or an allocation over -malloc_limit_mb.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <typeinfo>

#include "core/error.h"

namespace slm::fuzz {

[[noreturn]] inline void Finding(const std::string& what) {
  std::fprintf(stderr, "\n==slm-fuzz== FINDING: %s\n", what.c_str());
  std::fflush(stderr);
  std::abort();
}

// Runs `body`; slm::Error is the expected rejection and must mention `place`.
template <typename Body>
void ExpectCleanRejection(const std::string& place, Body&& body) {
  try {
    body();
  } catch (const slm::Error& e) {
    const std::string message = e.what();
    if (!place.empty() && message.find(place) == std::string::npos)
      Finding("slm::Error without the input's name '" + place + "': " + message);
  } catch (const std::exception& e) {
    Finding(std::string("exception other than slm::Error escaped (") + typeid(e).name() +
            "): " + e.what());
  } catch (...) {
    Finding("a non-std exception escaped");
  }
}

}  // namespace slm::fuzz

#define SLM_FUZZ_ASSERT(condition, message)                                                 \
  do {                                                                                       \
    if (!(condition)) ::slm::fuzz::Finding(std::string("invariant '" #condition "' broken: ") + \
                                           (message));                                       \
  } while (0)
