// Data-parallel training on PyTorch's c10d: a Gloo process group (CPU tensors; Gloo also reduces
// CUDA tensors by staging them) over a TCPStore rendezvous, configured by the usual environment
// variables RANK, WORLD_SIZE, MASTER_ADDR (default 127.0.0.1) and MASTER_PORT (default 29500).
// Without WORLD_SIZE (or WORLD_SIZE=1) everything is a no-op on one process.
// `slm train --nproc N` sets them for N local processes (SpawnLocalRanks).
// NCCL is not used: the Debian/PyPI toolchain here has no nccl headers; Gloo is the c10d backend on
// every device (see docs/ARCHITECTURE.md).
// Thread-safety: one Distributed per process, used from the training thread.
#pragma once

#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

namespace slm::train {

class Distributed {
 public:
  // Reads the environment; joins the group when WORLD_SIZE > 1 (slm::Error for invalid values or
  // a rendezvous that fails).
  static Distributed FromEnvironment();
  Distributed();  // a single process
  ~Distributed();
  Distributed(Distributed&&) noexcept;
  Distributed& operator=(Distributed&&) noexcept;

  int Rank() const { return rank_; }
  int World() const { return world_; }
  bool IsMain() const { return rank_ == 0; }

  // Sums every tensor's values over all ranks, in place (one flattened all-reduce).
  void AllReduceSum(const std::vector<torch::Tensor>& tensors);
  double AllReduceSum(double value);
  // Sums the gradients of `parameters` (missing gradients count as zero and are created).
  void AllReduceGradients(const std::vector<torch::Tensor>& parameters);
  void Barrier();

 private:
  struct Group;
  int rank_ = 0;
  int world_ = 1;
  std::unique_ptr<Group> group_;
};

// Runs `argv` (this executable with --nproc removed) as `nproc` local ranks with RANK, WORLD_SIZE,
// MASTER_ADDR, MASTER_PORT set, waits for all and returns 0 when every rank succeeded; when one
// fails the others are terminated and its exit status is returned.
int SpawnLocalRanks(const std::vector<std::string>& argv, int nproc, int port);

}  // namespace slm::train
