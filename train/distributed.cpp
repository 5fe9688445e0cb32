#include "train/distributed.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef SLM_WITH_NCCL
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include "core/error.h"
#include "core/log.h"
#include "core/process.h"

namespace slm::train {

struct Distributed::Group {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> group;  // ProcessGroupGloo or ProcessGroupNCCL
};

namespace {

int EnvInt(const char* name, int fallback) {
  const char* value = std::getenv(name);
  if (value == nullptr || *value == '\0') return fallback;
  char* end = nullptr;
  const long parsed = std::strtol(value, &end, 10);
  Check(end != nullptr && *end == '\0' && parsed >= 0 && parsed < (1 << 20), "environment variable ",
        name, "=\"", value, "\" is not a non-negative integer");
  return static_cast<int>(parsed);
}

}  // namespace

Distributed::Distributed() = default;
Distributed::~Distributed() = default;
Distributed::Distributed(Distributed&&) noexcept = default;
Distributed& Distributed::operator=(Distributed&&) noexcept = default;

Distributed Distributed::FromEnvironment(const std::string& device) {
  Distributed d;
  d.world_ = std::max(1, EnvInt("WORLD_SIZE", 1));
  d.rank_ = EnvInt("RANK", 0);
  Check(d.rank_ < d.world_, "RANK=", d.rank_, " must be below WORLD_SIZE=", d.world_);
  if (d.world_ == 1) return d;
  const bool cuda = device.rfind("cuda", 0) == 0 || (device == "auto" && torch::cuda::is_available());
  if (cuda) {
#ifdef SLM_WITH_NCCL
    const int devices = static_cast<int>(torch::cuda::device_count());
    Check(devices > 0, "data parallel on '", device, "': no CUDA device is visible to rank ", d.rank_);
    const int local = EnvInt("LOCAL_RANK", d.rank_ % devices);
    Check(local < devices, "LOCAL_RANK=", local, " but only ", devices, " CUDA devices are visible");
    d.device_ = torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(local));
    c10::cuda::set_device(d.device_.index());
#else
    throw Error(Str("data parallel on '", device, "' needs ProcessGroupNCCL, which this build lacks (nccl.h "
                    "or the CUDA toolkit headers were not found at configure time; see docs/ARCHITECTURE.md)"));
#endif
  }
  const char* addr = std::getenv("MASTER_ADDR");
  const std::string host = addr != nullptr && *addr != '\0' ? addr : "127.0.0.1";
  const int port = EnvInt("MASTER_PORT", 29500);
  d.group_ = std::make_unique<Group>();
  try {
    c10d::TCPStoreOptions options;
    options.port = static_cast<uint16_t>(port);
    options.isServer = d.rank_ == 0;
    options.numWorkers = d.world_;
    options.timeout = std::chrono::minutes(5);
    d.group_->store = c10::make_intrusive<c10d::TCPStore>(host, options);
    // Rank 0 evaluates and checkpoints while the others wait in a barrier: long timeouts.
    if (cuda) {
#ifdef SLM_WITH_NCCL
      auto nccl = c10d::ProcessGroupNCCL::Options::create();
      nccl->timeout = std::chrono::hours(3);
      d.group_->group = c10::make_intrusive<c10d::ProcessGroupNCCL>(d.group_->store, d.rank_, d.world_, nccl);
#endif
    } else {
      auto gloo = c10d::ProcessGroupGloo::Options::create();
      gloo->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
      gloo->timeout = std::chrono::hours(3);
      d.group_->group = c10::make_intrusive<c10d::ProcessGroupGloo>(d.group_->store, d.rank_, d.world_, gloo);
    }
  } catch (const std::exception& e) {
    throw Error(Str("joining the process group (rank ", d.rank_, " of ", d.world_, " at ", host, ":",
                    port, ") failed: ", e.what()));
  }
  log::Info(Str("data parallel: rank ", d.rank_, " of ", d.world_, " (c10d ", cuda ? "NCCL on " : "Gloo",
                cuda ? d.device_.str() : std::string(), ", ", host, ":", port, ")"));
  return d;
}

std::string Distributed::Device(const std::string& configured) const {
  return device_.is_cuda() ? device_.str() : configured;
}

void Distributed::AllReduceSum(const std::vector<torch::Tensor>& tensors) {
  if (world_ == 1 || tensors.empty()) return;
  std::vector<torch::Tensor> flat_parts;
  for (const torch::Tensor& t : tensors) flat_parts.push_back(t.reshape(-1));
  std::vector<torch::Tensor> flat = {torch::cat(flat_parts)};
  group_->group->allreduce(flat)->wait();
  int64_t offset = 0;
  for (const torch::Tensor& t : tensors) {
    const int64_t n = t.numel();
    t.copy_(flat[0].slice(0, offset, offset + n).view(t.sizes()));
    offset += n;
  }
}

double Distributed::AllReduceSum(double value) {
  if (world_ == 1) return value;
  torch::Tensor t = torch::tensor({value}, torch::TensorOptions().dtype(torch::kDouble).device(device_));
  AllReduceSum(std::vector<torch::Tensor>{t});
  return t.item<double>();
}

void Distributed::AllReduceGradients(const std::vector<torch::Tensor>& parameters) {
  if (world_ == 1) return;
  std::vector<torch::Tensor> grads;
  for (const torch::Tensor& p : parameters) {
    if (!p.grad().defined()) p.mutable_grad() = torch::zeros_like(p);
    grads.push_back(p.grad());
  }
  AllReduceSum(grads);
}

void Distributed::Barrier() {
  if (world_ == 1) return;
  group_->group->barrier()->wait();
}

int SpawnLocalRanks(const std::vector<std::string>& argv, int nproc, int port) {
  Check(nproc >= 1, "--nproc must be >= 1, got ", nproc);
  std::vector<pid_t> children;
  for (int rank = 0; rank < nproc; ++rank) {
    ChildSpec spec;
    spec.argv = argv;
    spec.env = {{"RANK", std::to_string(rank)}, {"LOCAL_RANK", std::to_string(rank)},
                {"WORLD_SIZE", std::to_string(nproc)}, {"MASTER_ADDR", "127.0.0.1"}, {"MASTER_PORT", std::to_string(port)}};
    children.push_back(StartChild(spec));
  }
  int result = 0;
  size_t alive = children.size();
  while (alive > 0) {
    const auto [done, code] = WaitAnyChild();
    if (done < 0) break;
    --alive;
    if (code != 0 && result == 0) {
      result = code;
      for (pid_t pid : children)
        if (pid != done) kill(pid, SIGTERM);  // a rank that died leaves the others blocked in a collective
    }
  }
  return result;
}

}  // namespace slm::train
