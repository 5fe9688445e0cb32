// safetensors reader and writer (https://github.com/huggingface/safetensors format):
//   [u64 little-endian N][N bytes JSON header][data]
// header: {"name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ...,
//          "__metadata__": {"k": "v"}} with offsets relative to the start of the data block.
//
// The reader memory-maps the file (copy-on-write, so writes into a returned tensor never reach the
// file) and validates everything before any tensor is handed out: header length against the cap and
// the file size, JSON syntax, known dtypes, shape*itemsize == byte length (overflow-checked), every
// range inside the data block, ranges neither overlapping nor leaving holes (as the reference
// implementation requires). Every error is an slm::Error naming the file and, where relevant, the
// tensor. Tensors from Get() are CPU tensors that share the mapping (zero-copy) when the data is
// suitably aligned, else a copy; the mapping lives as long as any tensor or the reader does.
//
// dtypes: F32 F16 BF16 F64 I64 I32 I16 I8 U8 BOOL (F32/F16/BF16/I64 are what checkpoints use).
// Thread-safety: a reader is immutable after construction; Get() may be called concurrently.
//
// Every model loader reads its weights strictly through one Plan (below) checked by
// Checkpoint::Verify / Load, so that missing, unexpected, misshaped and wrongly typed tensors get
// the same messages in every model family and a bad checkpoint never half-loads a model.
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace torch::nn {
class Module;
}  // namespace torch::nn

namespace slm::safetensors {

struct TensorInfo {
  std::string name;
  std::string dtype;  // as in the file: "F32", "BF16", ...
  torch::ScalarType scalar_type;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // byte offsets into the data block
  uint64_t end = 0;
};

struct ReaderOptions {
  // The reference implementation refuses headers over 100 MB; so do we.
  uint64_t max_header_bytes = 100ull << 20;
};

class Reader {
 public:
  explicit Reader(const std::string& path, ReaderOptions options = {});
  ~Reader();
  Reader(const Reader&) = delete;
  Reader& operator=(const Reader&) = delete;

  const std::string& Path() const { return path_; }
  const std::vector<TensorInfo>& Tensors() const { return tensors_; }  // sorted by name
  std::vector<std::string> Names() const;
  bool Has(const std::string& name) const;
  const TensorInfo& Info(const std::string& name) const;  // throws naming file and tensor
  torch::Tensor Get(const std::string& name) const;
  // destination.copy_(Get(name)) (dtype/device converted), then the file pages that held only this
  // tensor are handed back to the kernel (madvise MADV_DONTNEED; they are re-read from the file if
  // touched again), so loading a model keeps neither the whole file resident on top of the model:
  // peak memory ~ the model, not twice it. Changes a tensor from Get(name) made by writing into it.
  void CopyInto(const std::string& name, torch::Tensor destination) const;
  const std::map<std::string, std::string>& Metadata() const { return metadata_; }

 private:
  struct Mapping;
  std::string path_;
  std::shared_ptr<Mapping> mapping_;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
  uint64_t data_offset_ = 0;  // file offset of the data block
};

// One tensor a loader expects, by its name in the checkpoint.
struct Expected {
  std::string name;
  std::vector<int64_t> shape;  // exactly
  // A floating-point dtype admits any floating-point one in the file (F32, F16, BF16 checkpoints
  // load alike, converted when copied); any other dtype must match exactly.
  torch::ScalarType dtype = torch::kFloat;
  torch::Tensor destination;  // what Load copies the value into; undefined: only checked
  bool optional = false;      // may be absent; checked like the others when present
};

// What a loader expects of a checkpoint: the tensors it reads, and which others it ignores.
struct Plan {
  std::vector<Expected> tensors;  // unique names
  // Checkpoint tensors outside `tensors` that are no error (another model's parts, buffers that
  // are recomputed); unset: every other tensor is unexpected.
  std::function<bool(const std::string&)> ignore;
  // Messages read "<file>: missing <what>s 'a', 'b' and 3 more<missing_hint>" and
  // "<file>: unexpected <what>s ...<unexpected_hint>"; the hints say what a mismatch suggests.
  std::string what = "tensor";
  std::string missing_hint, unexpected_hint;

  // `destination`'s shape and dtype under `name`, copied into it.
  void Expect(const std::string& name, const torch::Tensor& destination);
  // Every parameter of `module` (buffers are not loaded), stored under rename(its name) or, when
  // rename is unset, its name.
  void ExpectParameters(const torch::nn::Module& module,
                        const std::function<std::string(const std::string&)>& rename = {});
};

// The weights of a Hugging Face model directory: model.safetensors, or
// model.safetensors.index.json with its shards. Shard names must be plain file names inside the
// directory (an index cannot make us read elsewhere); every tensor the index lists must exist in
// its shard; tensors a shard holds beyond the index are included (so a loader reports them as
// unexpected instead of loading a model that silently differs from the files). slm::Error naming
// the file for each of these, and for a directory with neither file (pytorch_model.bin is named as
// unsupported). Immutable after construction: every member may be called concurrently, Loads
// included as long as no two write the same destination.
class Checkpoint {
 public:
  explicit Checkpoint(const std::string& model_dir);
  // A single safetensors file that is not a model directory's (adapters, decoders).
  static Checkpoint File(const std::string& path);
  // The index or the single file, for messages.
  const std::string& Described() const { return described_; }
  // Tensor name -> the reader holding it.
  const std::map<std::string, const Reader*>& Sources() const { return sources_; }
  const Reader* Source(const std::string& name) const;  // nullptr when absent
  torch::Tensor Get(const std::string& name) const;    // Reader::Get; slm::Error when absent

  // Checks `plan` without reading tensor data (destinations on the meta device will do).
  // slm::Error, in this order: the first planned tensor with another shape or dtype (naming the
  // file holding it), all missing ones, all unexpected ones (naming Described(); five are listed,
  // then "and N more").
  void Verify(const Plan& plan) const;
  // Verify, then each planned tensor that is present and has a destination is copied into it as
  // Reader::CopyInto does (converted to the destination's dtype and device, no autograd history).
  // Nothing is written unless the whole plan checks out.
  void Load(const Plan& plan) const;

 private:
  Checkpoint() = default;
  std::vector<std::unique_ptr<Reader>> readers_;
  std::map<std::string, const Reader*> sources_;
  std::string described_;
};

// Writes tensors (any device, any layout: moved to contiguous CPU) atomically (core/fs.h): a failed
// write leaves an existing file at `path` untouched. Names must be unique and non-empty.
void Save(const std::string& path, const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
          const std::map<std::string, std::string>& metadata = {});

// "F32" <-> torch::kFloat etc.; throws slm::Error for an unsupported one.
torch::ScalarType ParseDtype(const std::string& dtype);
std::string DtypeName(torch::ScalarType type);

}  // namespace slm::safetensors
