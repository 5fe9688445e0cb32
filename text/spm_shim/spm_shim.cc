// The only translation unit that sees sentencepiece (and, through it, sentencepiece's private
// protobuf-lite). See spm_shim.h for why; the contract of every function is stated there.
//
// Two rules hold for every entry point:
//  * no exception crosses the C boundary: each body runs inside Guard(), which turns any C++
//    exception (std::bad_alloc from a huge input, anything sentencepiece's internals throw) into a
//    status code and a thread-local message;
//  * ids are range-checked here, because sentencepiece's IdToPiece/IsControl index the model's
//    repeated field without a bounds check and an out-of-range id would be undefined behaviour.
#define SLM_SPM_SHIM_BUILDING 1
#include "spm_shim.h"

#include <cctype>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "sentencepiece_processor.h"
#include "sentencepiece_trainer.h"

struct slm_spm_processor {
  sentencepiece::SentencePieceProcessor processor;
};

namespace {

thread_local std::string last_error;

slm_spm_status Fail(slm_spm_status code, std::string message) {
  last_error = std::move(message);
  return code;
}

// sentencepiece's CHECK_*_OR_RETURN messages read "src/file.cc(123) [expression] explanation";
// callers want the explanation, so the location and the expression are dropped when one follows.
std::string Explanation(const char* raw) {
  std::string message = raw == nullptr ? "" : raw;
  const size_t open = message.find(") [");
  const size_t close = open == std::string::npos ? std::string::npos : message.find("] ", open);
  if (close == std::string::npos || message.find(' ') < open) return message;
  std::string rest = message.substr(close + 2);
  while (!rest.empty() && rest.back() == ' ') rest.pop_back();
  return rest.empty() ? message : rest;
}

slm_spm_status FromStatus(const sentencepiece::util::Status& status) {
  if (status.ok()) return SLM_SPM_OK;
  const std::string message = Explanation(status.error_message());
  return Fail(static_cast<slm_spm_status>(status.code()),
              message.empty() ? "sentencepiece failed" : message);
}

template <typename Body>
slm_spm_status Guard(Body&& body) noexcept {
  try {
    last_error.clear();
    return body();
  } catch (const std::bad_alloc&) {
    return Fail(SLM_SPM_RESOURCE_EXHAUSTED, "out of memory inside sentencepiece");
  } catch (const std::exception& e) {
    return Fail(SLM_SPM_INTERNAL, std::string("sentencepiece: ") + e.what());
  } catch (...) {
    return Fail(SLM_SPM_INTERNAL, "sentencepiece: unknown exception");
  }
}

// malloc-backed so that slm_spm_free() can release every buffer type with std::free.
template <typename T>
T* Allocate(size_t count) {
  if (count == 0) return nullptr;
  void* memory = std::malloc(count * sizeof(T));
  if (memory == nullptr) throw std::bad_alloc();
  return static_cast<T*>(memory);
}

slm_spm_status CheckId(const slm_spm_processor* p, int32_t id) {
  const int size = p->processor.GetPieceSize();
  if (id < 0 || id >= size) {
    return Fail(SLM_SPM_OUT_OF_RANGE, "id " + std::to_string(id) +
                                          " is out of range: the vocabulary has ids 0.." +
                                          std::to_string(size - 1));
  }
  return SLM_SPM_OK;
}

// A successfully parsed model can still be unusable (a protobuf that happens to parse from
// arbitrary bytes has no pieces); sentencepiece reports that through status(), but an empty
// vocabulary would also break the id range checks above, so it is rejected here as well.
slm_spm_status FinishLoad(std::unique_ptr<slm_spm_processor> p, slm_spm_processor** out) {
  const slm_spm_status status = FromStatus(p->processor.status());
  if (status != SLM_SPM_OK) return status;
  if (p->processor.GetPieceSize() <= 0) {
    return Fail(SLM_SPM_DATA_LOSS, "the model has an empty vocabulary");
  }
  *out = p.release();
  return SLM_SPM_OK;
}

// Whitespace-separated "--key=value" flags to the map form of SentencePieceTrainer::Train.
slm_spm_status ParseOptions(const char* options,
                            std::unordered_map<std::string, std::string>* kwargs) {
  const std::string text = options == nullptr ? "" : options;
  size_t pos = 0;
  while (pos < text.size()) {
    while (pos < text.size() && std::isspace(static_cast<unsigned char>(text[pos]))) ++pos;
    size_t end = pos;
    while (end < text.size() && !std::isspace(static_cast<unsigned char>(text[end]))) ++end;
    if (end == pos) break;
    std::string arg = text.substr(pos, end - pos);
    pos = end;
    if (arg.compare(0, 2, "--") == 0) arg.erase(0, 2);
    const size_t eq = arg.find('=');
    std::string key = arg.substr(0, eq);
    std::string value = eq == std::string::npos ? "" : arg.substr(eq + 1);
    if (key.empty()) {
      return Fail(SLM_SPM_INVALID_ARGUMENT, "empty trainer option in \"" + text + "\"");
    }
    if (key == "input" || key == "model_prefix") {
      return Fail(SLM_SPM_INVALID_ARGUMENT,
                  "--" + key + " must be passed as its own argument, not in the options string");
    }
    if (!kwargs->emplace(key, value).second) {
      return Fail(SLM_SPM_INVALID_ARGUMENT, "trainer option --" + key + " given twice");
    }
  }
  return SLM_SPM_OK;
}

std::mutex train_mutex;

}  // namespace

extern "C" {

const char* slm_spm_last_error(void) { return last_error.c_str(); }

void slm_spm_free(void* buffer) { std::free(buffer); }

slm_spm_status slm_spm_train(const char* input_path, const char* model_prefix,
                             const char* options) {
  return Guard([&]() -> slm_spm_status {
    if (input_path == nullptr || *input_path == '\0') {
      return Fail(SLM_SPM_INVALID_ARGUMENT, "no training input file");
    }
    if (model_prefix == nullptr || *model_prefix == '\0') {
      return Fail(SLM_SPM_INVALID_ARGUMENT, "no model prefix");
    }
    std::unordered_map<std::string, std::string> kwargs;
    if (const slm_spm_status s = ParseOptions(options, &kwargs); s != SLM_SPM_OK) return s;
    std::lock_guard<std::mutex> lock(train_mutex);
    if (auto it = kwargs.find("random_seed"); it != kwargs.end()) {
      char* end = nullptr;
      const unsigned long seed = std::strtoul(it->second.c_str(), &end, 10);
      if (it->second.empty() || *end != '\0' || seed == static_cast<unsigned int>(-1)) {
        return Fail(SLM_SPM_INVALID_ARGUMENT, "--random_seed needs an unsigned integer below " +
                                                  std::to_string(static_cast<unsigned int>(-1)) +
                                                  ", got \"" + it->second + "\"");
      }
      sentencepiece::SetRandomGeneratorSeed(static_cast<unsigned int>(seed));
      kwargs.erase(it);
    }
    kwargs["input"] = input_path;
    kwargs["model_prefix"] = model_prefix;
    return FromStatus(sentencepiece::SentencePieceTrainer::Train(kwargs));
  });
}

slm_spm_status slm_spm_load_file(const char* path, slm_spm_processor** out) {
  return Guard([&]() -> slm_spm_status {
    if (path == nullptr || out == nullptr) return Fail(SLM_SPM_INVALID_ARGUMENT, "null argument");
    auto p = std::make_unique<slm_spm_processor>();
    const slm_spm_status status = FromStatus(p->processor.Load(path));
    if (status != SLM_SPM_OK) return status;
    return FinishLoad(std::move(p), out);
  });
}

slm_spm_status slm_spm_load_bytes(const void* data, size_t size, slm_spm_processor** out) {
  return Guard([&]() -> slm_spm_status {
    if ((data == nullptr && size > 0) || out == nullptr) {
      return Fail(SLM_SPM_INVALID_ARGUMENT, "null argument");
    }
    if (size == 0) return Fail(SLM_SPM_DATA_LOSS, "the model is empty (0 bytes)");
    auto p = std::make_unique<slm_spm_processor>();
    const absl::string_view bytes(static_cast<const char*>(data), size);
    const sentencepiece::util::Status status = p->processor.LoadFromSerializedProto(bytes);
    if (!status.ok()) {
      // A parse failure comes back as the failed expression alone; say what it means.
      const std::string message = Explanation(status.error_message());
      const bool parse_failed = message.find("ParseFromArray") != std::string::npos;
      return Fail(status.code() == sentencepiece::util::StatusCode::kInternal
                      ? SLM_SPM_DATA_LOSS
                      : static_cast<slm_spm_status>(status.code()),
                  parse_failed ? std::string("the bytes do not parse as a sentencepiece ModelProto")
                               : "not a usable sentencepiece model: " + message);
    }
    return FinishLoad(std::move(p), out);
  });
}

void slm_spm_destroy(slm_spm_processor* processor) { delete processor; }

slm_spm_status slm_spm_encode_ids(const slm_spm_processor* p, const char* text, size_t size,
                                  int32_t** ids, size_t* count) {
  return Guard([&]() -> slm_spm_status {
    if (p == nullptr || (text == nullptr && size > 0) || ids == nullptr || count == nullptr) {
      return Fail(SLM_SPM_INVALID_ARGUMENT, "null argument");
    }
    std::vector<int> result;
    const slm_spm_status status = FromStatus(
        p->processor.Encode(absl::string_view(text == nullptr ? "" : text, size), &result));
    if (status != SLM_SPM_OK) return status;
    int32_t* buffer = Allocate<int32_t>(result.size());
    for (size_t i = 0; i < result.size(); ++i) buffer[i] = result[i];
    *ids = buffer;
    *count = result.size();
    return SLM_SPM_OK;
  });
}

slm_spm_status slm_spm_encode_pieces(const slm_spm_processor* p, const char* text, size_t size,
                                     char** bytes, size_t** lengths, size_t* count) {
  return Guard([&]() -> slm_spm_status {
    if (p == nullptr || (text == nullptr && size > 0) || bytes == nullptr || lengths == nullptr ||
        count == nullptr) {
      return Fail(SLM_SPM_INVALID_ARGUMENT, "null argument");
    }
    std::vector<std::string> pieces;
    const slm_spm_status status = FromStatus(
        p->processor.Encode(absl::string_view(text == nullptr ? "" : text, size), &pieces));
    if (status != SLM_SPM_OK) return status;
    size_t total = 0;
    for (const std::string& piece : pieces) total += piece.size();
    std::unique_ptr<char, decltype(&std::free)> data(Allocate<char>(total), &std::free);
    size_t* sizes = Allocate<size_t>(pieces.size());
    size_t offset = 0;
    for (size_t i = 0; i < pieces.size(); ++i) {
      if (!pieces[i].empty()) std::memcpy(data.get() + offset, pieces[i].data(), pieces[i].size());
      offset += pieces[i].size();
      sizes[i] = pieces[i].size();
    }
    *bytes = data.release();
    *lengths = sizes;
    *count = pieces.size();
    return SLM_SPM_OK;
  });
}

slm_spm_status slm_spm_decode_ids(const slm_spm_processor* p, const int32_t* ids, size_t count,
                                  char** text, size_t* size) {
  return Guard([&]() -> slm_spm_status {
    if (p == nullptr || (ids == nullptr && count > 0) || text == nullptr || size == nullptr) {
      return Fail(SLM_SPM_INVALID_ARGUMENT, "null argument");
    }
    std::vector<int> input(count);
    for (size_t i = 0; i < count; ++i) {
      if (const slm_spm_status s = CheckId(p, ids[i]); s != SLM_SPM_OK) {
        return Fail(s, last_error + " (at position " + std::to_string(i) + ")");
      }
      input[i] = ids[i];
    }
    std::string result;
    const slm_spm_status status = FromStatus(p->processor.Decode(input, &result));
    if (status != SLM_SPM_OK) return status;
    char* buffer = Allocate<char>(result.size() + 1);
    std::memcpy(buffer, result.data(), result.size());
    buffer[result.size()] = '\0';
    *text = buffer;
    *size = result.size();
    return SLM_SPM_OK;
  });
}

int32_t slm_spm_piece_to_id(const slm_spm_processor* p, const char* piece, size_t size) {
  if (p == nullptr) return -1;
  try {
    return p->processor.PieceToId(absl::string_view(piece == nullptr ? "" : piece, size));
  } catch (...) {
    return p->processor.unk_id();
  }
}

slm_spm_status slm_spm_id_to_piece(const slm_spm_processor* p, int32_t id, const char** piece,
                                   size_t* size) {
  return Guard([&]() -> slm_spm_status {
    if (p == nullptr || piece == nullptr || size == nullptr) {
      return Fail(SLM_SPM_INVALID_ARGUMENT, "null argument");
    }
    if (const slm_spm_status s = CheckId(p, id); s != SLM_SPM_OK) return s;
    const std::string& result = p->processor.IdToPiece(id);
    *piece = result.c_str();
    *size = result.size();
    return SLM_SPM_OK;
  });
}

slm_spm_status slm_spm_piece_kind(const slm_spm_processor* p, int32_t id, int* kind) {
  return Guard([&]() -> slm_spm_status {
    if (p == nullptr || kind == nullptr) return Fail(SLM_SPM_INVALID_ARGUMENT, "null argument");
    if (const slm_spm_status s = CheckId(p, id); s != SLM_SPM_OK) return s;
    const auto& sp = p->processor;
    *kind = sp.IsUnknown(id)   ? SLM_SPM_PIECE_UNKNOWN
            : sp.IsControl(id) ? SLM_SPM_PIECE_CONTROL
            : sp.IsUnused(id)  ? SLM_SPM_PIECE_UNUSED
            : sp.IsByte(id)    ? SLM_SPM_PIECE_BYTE
                               : SLM_SPM_PIECE_NORMAL;
    return SLM_SPM_OK;
  });
}

int32_t slm_spm_vocab_size(const slm_spm_processor* p) {
  return p == nullptr ? 0 : p->processor.GetPieceSize();
}
int32_t slm_spm_bos_id(const slm_spm_processor* p) {
  return p == nullptr ? -1 : p->processor.bos_id();
}
int32_t slm_spm_eos_id(const slm_spm_processor* p) {
  return p == nullptr ? -1 : p->processor.eos_id();
}
int32_t slm_spm_pad_id(const slm_spm_processor* p) {
  return p == nullptr ? -1 : p->processor.pad_id();
}
int32_t slm_spm_unk_id(const slm_spm_processor* p) {
  return p == nullptr ? -1 : p->processor.unk_id();
}

}  // extern "C"
