// Logging: a thin facade over spdlog (stderr, "[time] [level] message").
// Why a facade: LibTorch ships fmt 12 headers that shadow Debian's fmt 9 that spdlog was built
// against, so spdlog may only be included from translation units that do not see LibTorch's
// include path (core/log.cpp is compiled into the torch-free slm_log library). Thread-safe.
#pragma once

#include <string>

namespace slm::log {

enum class Level { kDebug, kInfo, kWarn, kError, kOff };

// Parses "debug|info|warn|error|off"; throws slm::Error naming the valid values otherwise.
Level ParseLevel(const std::string& name);
void SetLevel(Level level);
Level GetLevel();

void Debug(const std::string& message);
void Info(const std::string& message);
void Warn(const std::string& message);
void Error(const std::string& message);

}  // namespace slm::log
