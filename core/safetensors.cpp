#include "core/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <set>

#include "core/error.h"
#include "core/fs.h"
#include "core/strings.h"

namespace slm::safetensors {
namespace {

struct DtypeEntry {
  const char* name;
  torch::ScalarType type;
};
constexpr DtypeEntry kDtypes[] = {
    {"F32", torch::kFloat},  {"F16", torch::kHalf},  {"BF16", torch::kBFloat16},
    {"F64", torch::kDouble}, {"I64", torch::kLong},  {"I32", torch::kInt},
    {"I16", torch::kShort},  {"I8", torch::kChar},   {"U8", torch::kByte},
    {"BOOL", torch::kBool},
};

// "'a', 'b', 'c', 'd', 'e' and 3 more": enough to recognise a mismatch without a wall of names.
std::string NameList(const std::vector<std::string>& names) {
  const size_t shown = std::min<size_t>(names.size(), 5);
  std::string text = "'" + Join(std::vector<std::string>(names.begin(), names.begin() + shown), "', '") + "'";
  if (names.size() > shown) text += Str(" and ", names.size() - shown, " more");
  return text;
}

uint64_t ReadLe64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

}  // namespace

torch::ScalarType ParseDtype(const std::string& dtype) {
  for (const auto& d : kDtypes)
    if (dtype == d.name) return d.type;
  throw Error(Str("unsupported safetensors dtype '", dtype,
                  "' (supported: F32, F16, BF16, F64, I64, I32, I16, I8, U8, BOOL)"));
}

std::string DtypeName(torch::ScalarType type) {
  for (const auto& d : kDtypes)
    if (type == d.type) return d.name;
  throw Error(Str("tensor dtype ", c10::toString(type), " cannot be stored in safetensors here"));
}

struct Reader::Mapping {
  void* data = nullptr;
  size_t size = 0;
  ~Mapping() {
    if (data && data != MAP_FAILED) munmap(data, size);
  }
};

Reader::Reader(const std::string& path, ReaderOptions options) : path_(path) {
  auto fail = [&](const std::string& message) -> void {
    throw Error(Str("safetensors file '", path, "': ", message));
  };
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(Str("cannot open: ", std::strerror(errno)));
  struct stat st {};
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    fail("not a regular file");
  }
  const uint64_t file_size = static_cast<uint64_t>(st.st_size);
  if (file_size < 8) {
    close(fd);
    fail(Str("truncated: ", file_size, " bytes, shorter than the 8-byte header length"));
  }
  mapping_ = std::make_shared<Mapping>();
  mapping_->size = file_size;
  // MAP_PRIVATE + PROT_WRITE: copy-on-write, so a caller writing into a tensor never alters the file.
  mapping_->data = mmap(nullptr, file_size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  close(fd);
  if (mapping_->data == MAP_FAILED) {
    mapping_->data = nullptr;
    fail(Str("mmap failed: ", std::strerror(errno)));
  }
  const auto* bytes = static_cast<const uint8_t*>(mapping_->data);
  const uint64_t header_size = ReadLe64(bytes);
  if (header_size > options.max_header_bytes)
    fail(Str("header length ", header_size, " exceeds the limit of ", options.max_header_bytes,
             " bytes"));
  if (header_size > file_size - 8)
    fail(Str("truncated: header length ", header_size, " but only ", file_size - 8,
             " bytes follow"));
  const uint64_t data_size = file_size - 8 - header_size;

  nlohmann::json header;
  try {
    header = nlohmann::json::parse(bytes + 8, bytes + 8 + header_size);
  } catch (const nlohmann::json::exception& e) {
    fail(Str("header is not valid JSON: ", e.what()));
  }
  if (!header.is_object()) fail("header is not a JSON object");

  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    if (name == "__metadata__") {
      if (!it->is_object()) fail("__metadata__ is not an object");
      for (auto m = it->begin(); m != it->end(); ++m) {
        if (!m->is_string()) fail(Str("__metadata__ value for '", m.key(), "' is not a string"));
        metadata_[m.key()] = m->get<std::string>();
      }
      continue;
    }
    auto tfail = [&](const std::string& message) { fail(Str("tensor '", name, "': ", message)); };
    const auto& entry = *it;
    if (!entry.is_object()) tfail("entry is not an object");
    if (!entry.contains("dtype") || !entry["dtype"].is_string()) tfail("missing or invalid dtype");
    if (!entry.contains("shape") || !entry["shape"].is_array()) tfail("missing or invalid shape");
    if (!entry.contains("data_offsets") || !entry["data_offsets"].is_array() ||
        entry["data_offsets"].size() != 2)
      tfail("missing or invalid data_offsets");
    TensorInfo info;
    info.name = name;
    info.dtype = entry["dtype"].get<std::string>();
    try {
      info.scalar_type = ParseDtype(info.dtype);
    } catch (const Error& e) {
      tfail(e.what());
    }
    uint64_t elements = 1;
    for (const auto& dim : entry["shape"]) {
      if (!dim.is_number_unsigned()) tfail("shape entries must be non-negative integers");
      const uint64_t d = dim.get<uint64_t>();
      if (d > (1ull << 48) || (d != 0 && elements > UINT64_MAX / d)) tfail("shape overflows");
      elements *= d;
      info.shape.push_back(static_cast<int64_t>(d));
    }
    for (const auto& off : entry["data_offsets"])
      if (!off.is_number_unsigned()) tfail("data_offsets must be non-negative integers");
    info.begin = entry["data_offsets"][0].get<uint64_t>();
    info.end = entry["data_offsets"][1].get<uint64_t>();
    if (info.begin > info.end) tfail(Str("data_offsets [", info.begin, ", ", info.end, "] are reversed"));
    if (info.end > data_size)
      tfail(Str("data_offsets [", info.begin, ", ", info.end, "] point outside the data block of ",
                data_size, " bytes (file truncated or header corrupt)"));
    const uint64_t item = c10::elementSize(info.scalar_type);
    if (elements > UINT64_MAX / item || elements * item != info.end - info.begin)
      tfail(Str("shape needs ", elements, " x ", item, " bytes but data_offsets span ",
                info.end - info.begin));
    tensors_.push_back(std::move(info));
  }

  // Ranges must tile the data block exactly: no overlap, no hole, nothing trailing.
  std::vector<const TensorInfo*> by_offset;
  for (const auto& t : tensors_) by_offset.push_back(&t);
  std::sort(by_offset.begin(), by_offset.end(), [](const TensorInfo* a, const TensorInfo* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  uint64_t cursor = 0;
  const TensorInfo* previous = nullptr;
  for (const TensorInfo* t : by_offset) {
    if (t->begin < cursor)
      fail(Str("tensors '", previous->name, "' and '", t->name, "' overlap"));
    if (t->begin > cursor)
      fail(Str("hole of ", t->begin - cursor, " bytes before tensor '", t->name, "'"));
    cursor = t->end;
    previous = t;
  }
  if (cursor != data_size)
    fail(Str("data block has ", data_size - cursor, " bytes not covered by any tensor"));

  std::sort(tensors_.begin(), tensors_.end(),
            [](const TensorInfo& a, const TensorInfo& b) { return a.name < b.name; });
  for (size_t i = 0; i < tensors_.size(); ++i) index_[tensors_[i].name] = i;
  data_offset_ = 8 + header_size;
}

Reader::~Reader() = default;

std::vector<std::string> Reader::Names() const {
  std::vector<std::string> names;
  for (const auto& t : tensors_) names.push_back(t.name);
  return names;
}

bool Reader::Has(const std::string& name) const { return index_.count(name) != 0; }

const TensorInfo& Reader::Info(const std::string& name) const {
  auto it = index_.find(name);
  if (it == index_.end())
    throw Error(Str("safetensors file '", path_, "': no tensor named '", name, "'"));
  return tensors_[it->second];
}

torch::Tensor Reader::Get(const std::string& name) const {
  const TensorInfo& info = Info(name);
  auto* base = static_cast<uint8_t*>(mapping_->data) + data_offset_ + info.begin;
  const auto options = torch::TensorOptions().dtype(info.scalar_type);
  const size_t item = c10::elementSize(info.scalar_type);
  if (reinterpret_cast<uintptr_t>(base) % item != 0) {
    // Vectorised kernels assume element alignment; misaligned data is copied.
    torch::Tensor out = torch::empty(info.shape, options);
    // An empty tensor has no storage (data_ptr() is null), and memcpy's pointers must not be.
    if (info.end > info.begin) std::memcpy(out.data_ptr(), base, info.end - info.begin);
    return out;
  }
  auto keep_alive = mapping_;
  return torch::from_blob(base, info.shape, [keep_alive](void*) {}, options);
}

void Reader::CopyInto(const std::string& name, torch::Tensor destination) const {
  destination.copy_(Get(name));
  const TensorInfo& info = Info(name);
  const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const uintptr_t begin = reinterpret_cast<uintptr_t>(mapping_->data) + data_offset_ + info.begin;
  const uintptr_t end = reinterpret_cast<uintptr_t>(mapping_->data) + data_offset_ + info.end;
  const uintptr_t first = (begin + page - 1) / page * page, last = end / page * page;  // whole pages only
  if (last > first) madvise(reinterpret_cast<void*>(first), last - first, MADV_DONTNEED);
}

void Save(const std::string& path, const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
          const std::map<std::string, std::string>& metadata) {
  std::vector<std::pair<std::string, torch::Tensor>> sorted;
  for (const auto& [name, tensor] : tensors) {
    Check(!name.empty(), "cannot save a tensor with an empty name to '", path, "'");
    Check(name != "__metadata__", "'__metadata__' is reserved in safetensors ('", path, "')");
    Check(tensor.defined(), "tensor '", name, "' is undefined (saving '", path, "')");
    sorted.emplace_back(name, tensor.detach().to(torch::kCPU).contiguous());
  }
  std::sort(sorted.begin(), sorted.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  for (size_t i = 1; i < sorted.size(); ++i)
    Check(sorted[i].first != sorted[i - 1].first, "duplicate tensor name '", sorted[i].first,
          "' (saving '", path, "')");

  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const auto& [name, tensor] : sorted) {
    const uint64_t bytes = tensor.numel() * tensor.element_size();
    header[name] = {{"dtype", DtypeName(tensor.scalar_type())},
                    {"shape", tensor.sizes().vec()},
                    {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string text = header.dump();
  // Pad with spaces so the data block starts 8-byte aligned, as the reference writer does.
  text.append((8 - (8 + text.size()) % 8) % 8, ' ');
  fs::AtomicWrite(path, [&](std::FILE* f) {
    uint8_t length[8];
    uint64_t n = text.size();
    for (int i = 0; i < 8; ++i) length[i] = static_cast<uint8_t>(n >> (8 * i));
    bool ok = std::fwrite(length, 1, 8, f) == 8 && std::fwrite(text.data(), 1, text.size(), f) == text.size();
    for (const auto& [name, tensor] : sorted) {
      const size_t bytes = tensor.numel() * tensor.element_size();
      ok = ok && (bytes == 0 || std::fwrite(tensor.data_ptr(), 1, bytes, f) == bytes);
    }
    if (!ok) throw Error(Str("cannot write '", path, "': ", std::strerror(errno)));
  });
}

Checkpoint::Checkpoint(const std::string& model_dir) {
  namespace stdfs = std::filesystem;
  const std::string index_path = model_dir + "/model.safetensors.index.json";
  const std::string single_path = model_dir + "/model.safetensors";
  if (stdfs::exists(index_path)) {
    described_ = index_path;
    const nlohmann::json index = fs::ReadJson(index_path);
    const auto weight_map = index.is_object() ? index.find("weight_map") : index.end();
    Check(index.is_object() && weight_map != index.end() && weight_map->is_object(), index_path,
          ": missing or invalid \"weight_map\" object");
    std::map<std::string, const Reader*> shards;
    for (auto it = weight_map->begin(); it != weight_map->end(); ++it) {
      Check(it->is_string(), index_path, ": the shard of '", it.key(),
            "' must be a file name, got ", it->dump());
      const std::string shard = it->get<std::string>();
      Check(!shard.empty() && shard.find('/') == std::string::npos && shard != "..", index_path,
            ": shard name '", shard, "' must be a file name in the model directory");
      auto found = shards.find(shard);
      if (found == shards.end()) {
        const std::string shard_path = model_dir + "/" + shard;
        Check(stdfs::is_regular_file(shard_path), index_path, ": shard '", shard, "' (holding '",
              it.key(), "') does not exist in '", model_dir, "'");
        readers_.push_back(std::make_unique<Reader>(shard_path));
        found = shards.emplace(shard, readers_.back().get()).first;
      }
      Check(found->second->Has(it.key()), found->second->Path(), ": tensor '", it.key(),
            "' is listed in ", index_path, " but missing from this shard");
      sources_[it.key()] = found->second;
    }
    for (const auto& reader : readers_)
      for (const TensorInfo& info : reader->Tensors()) sources_.emplace(info.name, reader.get());
  } else if (stdfs::exists(single_path)) {
    *this = File(single_path);
  } else {
    const bool pickle = stdfs::exists(model_dir + "/pytorch_model.bin");
    throw Error(Str("no model.safetensors or model.safetensors.index.json in '", model_dir, "'",
                    pickle ? " (pytorch_model.bin is not read: convert it to safetensors)" : ""));
  }
}

Checkpoint Checkpoint::File(const std::string& path) {
  Checkpoint file;
  file.described_ = path;
  file.readers_.push_back(std::make_unique<Reader>(path));
  for (const TensorInfo& info : file.readers_[0]->Tensors()) file.sources_.emplace(info.name, file.readers_[0].get());
  return file;
}

const Reader* Checkpoint::Source(const std::string& name) const {
  const auto it = sources_.find(name);
  return it == sources_.end() ? nullptr : it->second;
}

torch::Tensor Checkpoint::Get(const std::string& name) const {
  const Reader* reader = Source(name);
  Check(reader != nullptr, described_, ": no tensor named '", name, "'");
  return reader->Get(name);
}

void Plan::Expect(const std::string& name, const torch::Tensor& destination) {
  tensors.push_back({name, destination.sizes().vec(), destination.scalar_type(), destination});
}

void Plan::ExpectParameters(const torch::nn::Module& module,
                            const std::function<std::string(const std::string&)>& rename) {
  for (const auto& named : module.named_parameters(/*recurse=*/true))
    Expect(rename ? rename(named.key()) : named.key(), named.value());
}

void Checkpoint::Verify(const Plan& plan) const {
  std::vector<std::string> missing;
  std::set<std::string> planned;
  for (const Expected& e : plan.tensors) {
    planned.insert(e.name);
    const Reader* reader = Source(e.name);
    if (reader == nullptr) {
      if (!e.optional) missing.push_back(e.name);
      continue;
    }
    const TensorInfo& info = reader->Info(e.name);
    Check(info.shape == e.shape, reader->Path(), ": tensor '", e.name, "' has shape ", ShapeString(info.shape),
          ", expected ", ShapeString(e.shape));
    const bool floating = torch::isFloatingType(e.dtype);
    Check(floating ? torch::isFloatingType(info.scalar_type) : info.scalar_type == e.dtype, reader->Path(),
          ": tensor '", e.name, "' has dtype ", info.dtype, ", expected ",
          floating ? "a floating-point one (F32, F16, BF16)" : DtypeName(e.dtype));
  }
  Check(missing.empty(), described_, ": missing ", plan.what, missing.size() > 1 ? "s " : " ", NameList(missing),
        plan.missing_hint);
  std::vector<std::string> unexpected;
  for (const auto& [name, reader] : sources_)
    if (!planned.count(name) && !(plan.ignore && plan.ignore(name))) unexpected.push_back(name);
  Check(unexpected.empty(), described_, ": unexpected ", plan.what, unexpected.size() > 1 ? "s " : " ",
        NameList(unexpected), plan.unexpected_hint);
}

void Checkpoint::Load(const Plan& plan) const {
  Verify(plan);
  torch::NoGradGuard no_grad;
  for (const Expected& e : plan.tensors)
    if (const Reader* reader = Source(e.name); reader != nullptr && e.destination.defined())
      reader->CopyInto(e.name, e.destination);
}

}  // namespace slm::safetensors
