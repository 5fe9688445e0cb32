// Data-parallel training on PyTorch's c10d over a TCPStore rendezvous, configured by the usual
// environment variables RANK, WORLD_SIZE, MASTER_ADDR (default 127.0.0.1), MASTER_PORT (default
// 29500) and, for CUDA, LOCAL_RANK (default RANK % visible devices): ProcessGroupGloo for CPU
// training, ProcessGroupNCCL for CUDA training (rank r on cuda:LOCAL_RANK), as torchrun + DDP do.
// NCCL is compiled in when nccl.h (PyPI's nvidia-nccl, installed with torch) and the CUDA toolkit
// headers are found at configure time; otherwise CUDA ranks are refused with that reason.
// Without WORLD_SIZE (or WORLD_SIZE=1) everything is a no-op on one process.
// `slm train --nproc N` sets them for N local processes (SpawnLocalRanks).
// Thread-safety: one Distributed per process, used from the training thread.
#pragma once

#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

namespace slm::train {

class Distributed {
 public:
  // Reads the environment; joins the group when WORLD_SIZE > 1: NCCL when `device` (the model's
  // configured device) is CUDA, else Gloo. slm::Error for invalid values, a rendezvous that fails,
  // or CUDA ranks on a build without NCCL.
  static Distributed FromEnvironment(const std::string& device = "cpu");
  Distributed();  // a single process
  ~Distributed();
  Distributed(Distributed&&) noexcept;
  Distributed& operator=(Distributed&&) noexcept;

  int Rank() const { return rank_; }
  int World() const { return world_; }
  bool IsMain() const { return rank_ == 0; }
  // The device this rank trains on: its own cuda:LOCAL_RANK under NCCL, else `configured`.
  std::string Device(const std::string& configured) const;

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
  torch::Device device_{torch::kCPU};  // where collectives' tensors live (CUDA under NCCL)
  std::unique_ptr<Group> group_;
};

// Runs `argv` (this executable with --nproc removed) as `nproc` local ranks with RANK, WORLD_SIZE,
// MASTER_ADDR, MASTER_PORT set, waits for all and returns 0 when every rank succeeded; when one
// fails the others are terminated and its exit status is returned.
int SpawnLocalRanks(const std::vector<std::string>& argv, int nproc, int port);

}  // namespace slm::train
