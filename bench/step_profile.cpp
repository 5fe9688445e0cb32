#include "bench/step_profile.h"

#include <torch/csrc/autograd/profiler_kineto.h>
#include <torch/cuda.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <memory>
#include <set>
#include <utility>
#include <vector>

#include "core/error.h"

namespace slm::bench {

namespace {

namespace kineto = torch::autograd::profiler;
using torch::profiler::impl::ActivityType;
using torch::profiler::impl::ProfilerConfig;
using torch::profiler::impl::ProfilerState;

// Total length of the union of [start, end) intervals: device time with at least one activity.
uint64_t UnionNs(std::vector<std::pair<uint64_t, uint64_t>> spans) {
  std::sort(spans.begin(), spans.end());
  uint64_t total = 0, open = 0, close = 0;
  bool any = false;
  for (const auto& [start, end] : spans) {
    if (!any || start > close) {
      if (any) total += close - open;
      open = start;
      close = end;
      any = true;
    } else {
      close = std::max(close, end);
    }
  }
  if (any) total += close - open;
  return total;
}

}  // namespace

nlohmann::json ProfileSteps(int steps, const std::function<void()>& step, const torch::Device& device,
                            int top, const std::string& trace_path) {
  Check(steps >= 1, "ProfileSteps: steps must be at least 1, got ", steps);
  const bool cuda = device.is_cuda();
  std::set<ActivityType> activities{ActivityType::CPU};
  if (cuda) activities.insert(ActivityType::CUDA);
  const ProfilerConfig config(ProfilerState::KINETO);
  if (cuda) torch::cuda::synchronize();
  kineto::prepareProfiler(config, activities);
  kineto::enableProfiler(config, activities);
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < steps; ++i) step();
  if (cuda) torch::cuda::synchronize();
  const double wall_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  const std::unique_ptr<kineto::ProfilerResult> result = kineto::disableProfiler();
  if (!trace_path.empty()) result->save(trace_path);

  const c10::DeviceType measured = cuda ? c10::DeviceType::CUDA : c10::DeviceType::CPU;
  std::map<std::string, std::pair<double, int64_t>> by_name;  // total ns, calls
  std::vector<std::pair<uint64_t, uint64_t>> spans;
  int64_t device_events = 0, cpu_events = 0;
  for (const kineto::KinetoEvent& e : result->events()) {
    if (e.deviceType() != measured) {
      ++cpu_events;
      continue;
    }
    if (!cuda) ++cpu_events;
    ++device_events;
    spans.emplace_back(e.startNs(), e.startNs() + e.durationNs());
    auto& entry = by_name[e.name().substr(0, 120)];
    entry.first += static_cast<double>(e.durationNs());
    entry.second += 1;
  }
  // On CPU, operators nest (a linear contains its matmul), so the union is the busy time but the
  // per-name totals overlap; on CUDA one stream's kernels do not.
  const double busy_ms = static_cast<double>(UnionNs(spans)) / 1e6;
  std::vector<std::pair<std::string, std::pair<double, int64_t>>> ranked(by_name.begin(), by_name.end());
  std::sort(ranked.begin(), ranked.end(),
            [](const auto& a, const auto& b) { return a.second.first > b.second.first; });
  nlohmann::json top_list = nlohmann::json::array();
  for (int i = 0; i < std::min<int>(top, static_cast<int>(ranked.size())); ++i) {
    const auto& [name, stats] = ranked[i];
    top_list.push_back({{"name", name},
                        {"ms_per_step", stats.first / 1e6 / steps},
                        {"calls_per_step", static_cast<double>(stats.second) / steps},
                        {"fraction_of_busy", busy_ms > 0 ? stats.first / 1e6 / busy_ms : 0.0}});
  }
  return {{"steps", steps},
          {"wall_ms_per_step", wall_ms / steps},
          {"device_busy_ms_per_step", busy_ms / steps},
          {"device_busy_fraction", wall_ms > 0 ? busy_ms / wall_ms : 0.0},
          {"device_events_per_step", static_cast<double>(device_events) / steps},
          {"cpu_events_per_step", static_cast<double>(cpu_events) / steps},
          {"top", top_list}};
}

}  // namespace slm::bench
