#include "engine/decode_graphs.h"

#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDACachingAllocator.h>

#include "core/error.h"
#include "core/log.h"
#include "core/strings.h"

namespace slm::engine {
namespace {

int64_t PowerOfTwoAtLeast(int64_t n) {
  int64_t p = 1;
  while (p < n) p *= 2;
  return p;
}

}  // namespace

int64_t DeviceFreeBytes(torch::Device device) {
  Check(device.is_cuda(), "DeviceFreeBytes: ", device.str(), " is not a CUDA device");
  const int index = device.has_index() ? device.index() : 0;
  const cudaDeviceProp* properties = at::cuda::getDeviceProperties(index);
  const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(index);
  const int64_t reserved =
      stats.reserved_bytes[static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE)].current;
  return static_cast<int64_t>(properties->totalGlobalMem) - reserved;
}

struct DecodeGraphs::Bucket {
  torch::Tensor ids, tables, past, fresh, slots;  // static inputs on the device
  torch::Tensor output;                           // [B, V] logits of the captured step
  std::unique_ptr<at::cuda::CUDAGraph> graph;
  int64_t calls = 0;
  bool lora = false;
  bool eager = false;  // capture failed: run eagerly
};

DecodeGraphs::DecodeGraphs(text::LlamaModel& model, text::KVBlockPool& pool) : model_(model), pool_(pool) {}
DecodeGraphs::~DecodeGraphs() = default;

torch::Tensor DecodeGraphs::Forward(Bucket& bucket, const text::LoraBank& bank) {
  text::PagedKVBatch paged{&pool_, bucket.tables, bucket.past, bucket.fresh};
  text::RowLora lora{&bank, bucket.slots};
  text::LlamaInput input;
  input.input_ids = bucket.ids;
  input.paged = &paged;
  input.row_lora = bucket.lora ? &lora : nullptr;
  input.logits_to_keep = 1;
  return model_->forward(input).logits.select(1, 0);
}

torch::Tensor DecodeGraphs::Run(const torch::Tensor& ids, const torch::Tensor& tables, const torch::Tensor& past,
                                const torch::Tensor& slots, bool lora, const text::LoraBank& bank) {
  if (bank.Generation() != bank_generation_) {
    buckets_.clear();  // new bank tensors: every captured step reads old addresses
    bank_generation_ = bank.Generation();
  }
  const int64_t rows = ids.size(0);
  const int64_t batch = PowerOfTwoAtLeast(rows);
  const int64_t width = PowerOfTwoAtLeast(tables.size(1));
  std::unique_ptr<Bucket>& slot = buckets_[{batch, width, lora}];
  const torch::Device device = pool_.Device();
  if (!slot) {
    slot = std::make_unique<Bucket>();
    const auto options = torch::TensorOptions(torch::kLong).device(device);
    slot->ids = torch::zeros({batch, 1}, options);
    slot->tables = torch::full({batch, width}, text::KVBlockPool::kScratchBlock, options);
    slot->past = torch::zeros({batch}, options);
    slot->fresh = torch::zeros({batch}, options);
    slot->slots = torch::zeros({batch}, options);
    slot->lora = lora;
  }
  Bucket& b = *slot;
  // Padding rows: no real token (fresh 0), every table entry the scratch block.
  torch::Tensor host_tables = torch::full({batch, width}, text::KVBlockPool::kScratchBlock, torch::kLong);
  host_tables.narrow(0, 0, rows).narrow(1, 0, tables.size(1)).copy_(tables);
  torch::Tensor host_fresh = torch::zeros({batch}, torch::kLong);
  host_fresh.narrow(0, 0, rows).fill_(1);
  auto fill = [&](torch::Tensor& to, const torch::Tensor& from) {
    torch::Tensor padded = torch::zeros(to.sizes(), torch::kLong);
    padded.narrow(0, 0, from.size(0)).copy_(from);
    to.copy_(padded, /*non_blocking=*/false);
  };
  fill(b.ids, ids);
  fill(b.past, past);
  fill(b.slots, slots);
  b.tables.copy_(host_tables);
  b.fresh.copy_(host_fresh);
  torch::Tensor logits;
  if (b.eager || b.calls++ == 0) {
    logits = Forward(b, bank);
  } else {
    if (!b.graph) {
      b.graph = std::make_unique<at::cuda::CUDAGraph>();
      try {
        b.graph->capture_begin();
        b.output = Forward(b, bank);
        b.graph->capture_end();
        ++captures_;
      } catch (const std::exception& e) {
        try {
          b.graph->capture_end();
        } catch (const std::exception&) {
        }
        b.graph.reset();
        b.eager = true;
        const std::string what = e.what();
        log::Warn(Str("decode: CUDA graph capture failed, this bucket runs eagerly: ", what.substr(0, what.find('\n'))));
        return Forward(b, bank).narrow(0, 0, rows).to(torch::kCPU);
      }
    }
    b.graph->replay();
    ++replays_;
    logits = b.output;
  }
  return logits.narrow(0, 0, rows).to(torch::kCPU);
}

}  // namespace slm::engine
