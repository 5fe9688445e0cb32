#include "core/log.h"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <mutex>

#include "core/error.h"

namespace slm::log {
namespace {

std::atomic<Level> g_level{Level::kInfo};

spdlog::logger& Logger() {
  // Created on first use so that static initialisation order never matters.
  static std::shared_ptr<spdlog::logger> logger = [] {
    auto l = spdlog::stderr_color_mt("slm");
    l->set_pattern("[%H:%M:%S.%e] [%^%l%$] %v");
    l->set_level(spdlog::level::debug);
    return l;
  }();
  return *logger;
}

bool Enabled(Level level) { return level >= g_level.load(std::memory_order_relaxed); }

}  // namespace

Level ParseLevel(const std::string& name) {
  if (name == "debug") return Level::kDebug;
  if (name == "info") return Level::kInfo;
  if (name == "warn") return Level::kWarn;
  if (name == "error") return Level::kError;
  if (name == "off") return Level::kOff;
  throw slm::Error("unknown log level '" + name + "' (valid: debug, info, warn, error, off)");
}

void SetLevel(Level level) { g_level = level; }
Level GetLevel() { return g_level; }

void Debug(const std::string& message) {
  if (Enabled(Level::kDebug)) Logger().debug(message);
}
void Info(const std::string& message) {
  if (Enabled(Level::kInfo)) Logger().info(message);
}
void Warn(const std::string& message) {
  if (Enabled(Level::kWarn)) Logger().warn(message);
}
void Error(const std::string& message) {
  if (Enabled(Level::kError)) Logger().error(message);
}

}  // namespace slm::log
