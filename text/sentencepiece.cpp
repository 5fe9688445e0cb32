#include "text/sentencepiece.h"

#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <utility>

#include "core/error.h"
#include "core/fs.h"
#include "core/strings.h"
#include "text/spm_shim/spm_shim.h"

namespace slm::text {
namespace {

namespace stdfs = std::filesystem;

// Owns a buffer returned by the shim.
struct ShimBuffer {
  void* data = nullptr;
  ~ShimBuffer() { slm_spm_free(data); }
};

std::string LastShimError() {
  const char* message = slm_spm_last_error();
  return message != nullptr && *message != '\0' ? message : "unknown sentencepiece error";
}

// The options string passes values through sentencepiece's whitespace-separated flag syntax.
void CheckFlagValue(const std::string& value, const std::string& what, const std::string& input) {
  for (const char c : value) {
    Check(!std::isspace(static_cast<unsigned char>(c)) && c != ',', "sentencepiece training on '",
          input, "': ", what, " '", value, "' contains whitespace or a comma, which sentencepiece ",
          "cannot take; choose a symbol without them");
  }
}

void ValidateTrainOptions(const SentencePieceTrainOptions& o) {
  const std::string& in = o.input;
  Check(!in.empty(),
        "sentencepiece training: no input file given (SentencePieceTrainOptions.input)");
  Check(in.find(',') == std::string::npos, "sentencepiece training input '", in,
        "' contains a comma, which sentencepiece reads as a list of files; rename the file");
  std::error_code ec;
  Check(stdfs::is_regular_file(in, ec), "sentencepiece training input '", in,
        "' does not exist or is not a regular file");
  {
    // An empty corpus makes sentencepiece fail with a bare "[!sentences_.empty()]".
    std::ifstream file(in, std::ios::binary);
    Check(static_cast<bool>(file), "cannot open sentencepiece training input '", in,
          "': ", std::strerror(errno));
    bool has_text = false;
    for (char c; !has_text && file.get(c);) has_text = !std::isspace(static_cast<unsigned char>(c));
    Check(has_text, "sentencepiece training input '", in,
          "' is empty (no non-blank line); give it a UTF-8 corpus with one sentence per line");
  }
  Check(!o.model_prefix.empty(), "sentencepiece training on '", in,
        "': no model_prefix given (the model is written to <model_prefix>.model)");
  const stdfs::path parent = stdfs::path(o.model_prefix).parent_path();
  Check(parent.empty() || stdfs::is_directory(parent, ec), "sentencepiece training on '", in,
        "': the directory of model_prefix '", o.model_prefix, "' does not exist");
  Check(o.model_type == "unigram" || o.model_type == "bpe", "sentencepiece training on '", in,
        "': model_type '", o.model_type, "' is not one of: unigram, bpe");
  Check(o.vocab_size > 0, "sentencepiece training on '", in, "': vocab_size must be positive, got ",
        o.vocab_size);
  Check(o.character_coverage >= 0.98 && o.character_coverage <= 1.0, "sentencepiece training on '",
        in, "': character_coverage must be in [0.98, 1.0], got ", o.character_coverage);
  Check(o.num_threads >= 1 && o.num_threads <= 128, "sentencepiece training on '", in,
        "': num_threads must be in [1, 128], got ", o.num_threads);
  Check(o.max_sentence_length >= 10, "sentencepiece training on '", in,
        "': max_sentence_length must be at least 10 bytes, got ", o.max_sentence_length);
  Check(o.input_sentence_size >= 0, "sentencepiece training on '", in,
        "': input_sentence_size must be >= 0 (0 = all sentences), got ", o.input_sentence_size);
  Check(o.seed != static_cast<uint32_t>(-1), "sentencepiece training on '", in, "': seed ", o.seed,
        " is reserved by sentencepiece (it means 'random'); pick another");
  Check(o.unk_id >= 0, "sentencepiece training on '", in,
        "': unk_id must be >= 0 (sentencepiece needs an unknown token), got ", o.unk_id);
  std::set<int> ids;
  const std::pair<const char*, int> specials[] = {
      {"unk_id", o.unk_id}, {"bos_id", o.bos_id}, {"eos_id", o.eos_id}, {"pad_id", o.pad_id}};
  for (const auto& [name, id] : specials) {
    if (id < 0) continue;
    Check(id < o.vocab_size, "sentencepiece training on '", in, "': ", name, "=", id,
          " is not below vocab_size=", o.vocab_size);
    Check(ids.insert(id).second, "sentencepiece training on '", in, "': ", name, "=", id,
          " is used by another special token; special ids must be distinct (-1 disables one)");
  }
  std::set<std::string> symbols;
  for (const std::string& symbol : o.user_defined_symbols) {
    Check(!symbol.empty(), "sentencepiece training on '", in, "': empty user_defined_symbol");
    CheckFlagValue(symbol, "user_defined_symbol", in);
    Check(symbols.insert(symbol).second, "sentencepiece training on '", in,
          "': user_defined_symbol '", symbol, "' is listed twice");
  }
}

std::string TrainerFlags(const SentencePieceTrainOptions& o) {
  std::ostringstream flags;
  flags.precision(17);
  flags << "--vocab_size=" << o.vocab_size << " --model_type=" << o.model_type
        << " --character_coverage=" << o.character_coverage << " --unk_id=" << o.unk_id
        << " --bos_id=" << o.bos_id << " --eos_id=" << o.eos_id << " --pad_id=" << o.pad_id
        << " --hard_vocab_limit=" << (o.hard_vocab_limit ? "true" : "false")
        << " --byte_fallback=" << (o.byte_fallback ? "true" : "false")
        << " --input_sentence_size=" << o.input_sentence_size
        << " --max_sentence_length=" << o.max_sentence_length << " --num_threads=" << o.num_threads
        << " --random_seed=" << o.seed << " --minloglevel=" << (o.verbose ? 0 : 2);
  if (!o.user_defined_symbols.empty()) {
    flags << " --user_defined_symbols=" << Join(o.user_defined_symbols, ",");
  }
  return flags.str();
}

// sentencepiece's messages say what failed and mostly what to do; this one needs the option that
// small corpora want (docs/HAZARDS.md hazard 4).
std::string TrainingHint(const std::string& message) {
  if (message.find("Vocabulary size too high") != std::string::npos) {
    return " The corpus is too small for that many pieces: lower vocab_size to the number "
           "sentencepiece suggests, or set hard_vocab_limit=false to make vocab_size an upper "
           "bound.";
  }
  return "";
}

}  // namespace

void SentencePiece::Train(const SentencePieceTrainOptions& options) {
  ValidateTrainOptions(options);
  const std::string flags = TrainerFlags(options);
  if (slm_spm_train(options.input.c_str(), options.model_prefix.c_str(), flags.c_str()) !=
      SLM_SPM_OK) {
    const std::string message = LastShimError();
    throw Error(Str("training a sentencepiece model on '", options.input, "' (writing '",
                    options.model_prefix, ".model') failed: ", message,
                    EndsWith(message, ".") ? "" : ".", TrainingHint(message)));
  }
}

SentencePiece SentencePiece::Load(const std::string& path) {
  std::error_code ec;
  Check(stdfs::exists(path, ec), "sentencepiece model '", path,
        "' not found; train one (slm text pretrain) or point to a tokenizer.model");
  Check(stdfs::is_regular_file(path, ec), "sentencepiece model '", path, "' is not a regular file");
  return LoadFromSerialized(fs::ReadFile(path), path);
}

SentencePiece SentencePiece::LoadFromSerialized(const std::string& bytes, const std::string& name) {
  slm_spm_processor* processor = nullptr;
  if (slm_spm_load_bytes(bytes.data(), bytes.size(), &processor) != SLM_SPM_OK) {
    throw Error(Str("corrupt sentencepiece model '", name, "' (", bytes.size(),
                    " bytes): ", LastShimError(),
                    ". Expected a sentencepiece .model file such as a Llama tokenizer.model "
                    "(Hugging Face tokenizer.json is a different format)"));
  }
  return SentencePiece(processor, name);
}

SentencePiece::SentencePiece(slm_spm_processor* processor, std::string source)
    : processor_(processor), source_(std::move(source)) {}

SentencePiece::SentencePiece(SentencePiece&& other) noexcept
    : processor_(std::exchange(other.processor_, nullptr)), source_(std::move(other.source_)) {}

SentencePiece& SentencePiece::operator=(SentencePiece&& other) noexcept {
  if (this != &other) {
    slm_spm_destroy(processor_);
    processor_ = std::exchange(other.processor_, nullptr);
    source_ = std::move(other.source_);
  }
  return *this;
}

SentencePiece::~SentencePiece() { slm_spm_destroy(processor_); }

std::vector<int> SentencePiece::Encode(std::string_view text) const {
  Check(processor_ != nullptr, "SentencePiece used after being moved from");
  int32_t* ids = nullptr;
  size_t count = 0;
  if (slm_spm_encode_ids(processor_, text.data(), text.size(), &ids, &count) != SLM_SPM_OK) {
    throw Error(Str("sentencepiece model '", source_, "' failed to encode ", text.size(),
                    " bytes of text: ", LastShimError()));
  }
  ShimBuffer owner{ids};
  return std::vector<int>(ids, ids + count);
}

std::vector<std::string> SentencePiece::EncodePieces(std::string_view text) const {
  Check(processor_ != nullptr, "SentencePiece used after being moved from");
  char* bytes = nullptr;
  size_t* lengths = nullptr;
  size_t count = 0;
  if (slm_spm_encode_pieces(processor_, text.data(), text.size(), &bytes, &lengths, &count) !=
      SLM_SPM_OK) {
    throw Error(Str("sentencepiece model '", source_, "' failed to encode ", text.size(),
                    " bytes of text: ", LastShimError()));
  }
  ShimBuffer bytes_owner{bytes};
  ShimBuffer lengths_owner{lengths};
  std::vector<std::string> pieces;
  pieces.reserve(count);
  size_t offset = 0;
  for (size_t i = 0; i < count; ++i) {
    pieces.emplace_back(bytes + offset, lengths[i]);
    offset += lengths[i];
  }
  return pieces;
}

std::string SentencePiece::Decode(const std::vector<int>& ids) const {
  Check(processor_ != nullptr, "SentencePiece used after being moved from");
  const int vocab = VocabSize();
  for (size_t i = 0; i < ids.size(); ++i) {
    Check(ids[i] >= 0 && ids[i] < vocab, "cannot decode id ", ids[i], " at position ", i,
          " with sentencepiece model '", source_, "': ids must be in [0, ", vocab,
          ") (was the text encoded with a different tokenizer?)");
  }
  static_assert(sizeof(int) == sizeof(int32_t), "ids are passed to the shim as int32_t");
  char* text = nullptr;
  size_t size = 0;
  if (slm_spm_decode_ids(processor_, reinterpret_cast<const int32_t*>(ids.data()), ids.size(),
                         &text, &size) != SLM_SPM_OK) {
    throw Error(Str("sentencepiece model '", source_, "' failed to decode ", ids.size(),
                    " ids: ", LastShimError()));
  }
  ShimBuffer owner{text};
  return std::string(text == nullptr ? "" : text, size);
}

int SentencePiece::PieceToId(std::string_view piece) const {
  Check(processor_ != nullptr, "SentencePiece used after being moved from");
  return slm_spm_piece_to_id(processor_, piece.data(), piece.size());
}

void SentencePiece::CheckId(int id, const char* what) const {
  Check(processor_ != nullptr, "SentencePiece used after being moved from");
  const int vocab = VocabSize();
  Check(id >= 0 && id < vocab, what, ": id ", id, " is out of range for sentencepiece model '",
        source_, "', whose ids are in [0, ", vocab, ")");
}

std::string SentencePiece::IdToPiece(int id) const {
  CheckId(id, "IdToPiece");
  const char* piece = nullptr;
  size_t size = 0;
  if (slm_spm_id_to_piece(processor_, id, &piece, &size) != SLM_SPM_OK) {
    throw Error(Str("sentencepiece model '", source_, "': ", LastShimError()));
  }
  return std::string(piece, size);
}

int SentencePiece::Kind(int id) const {
  CheckId(id, "piece kind");
  int kind = SLM_SPM_PIECE_NORMAL;
  if (slm_spm_piece_kind(processor_, id, &kind) != SLM_SPM_OK) {
    throw Error(Str("sentencepiece model '", source_, "': ", LastShimError()));
  }
  return kind;
}

bool SentencePiece::IsControl(int id) const { return Kind(id) == SLM_SPM_PIECE_CONTROL; }
bool SentencePiece::IsUnknown(int id) const { return Kind(id) == SLM_SPM_PIECE_UNKNOWN; }
bool SentencePiece::IsByte(int id) const { return Kind(id) == SLM_SPM_PIECE_BYTE; }

int SentencePiece::VocabSize() const {
  Check(processor_ != nullptr, "SentencePiece used after being moved from");
  return slm_spm_vocab_size(processor_);
}
int SentencePiece::BosId() const {
  Check(processor_ != nullptr, "SentencePiece used after being moved from");
  return slm_spm_bos_id(processor_);
}
int SentencePiece::EosId() const {
  Check(processor_ != nullptr, "SentencePiece used after being moved from");
  return slm_spm_eos_id(processor_);
}
int SentencePiece::PadId() const {
  Check(processor_ != nullptr, "SentencePiece used after being moved from");
  return slm_spm_pad_id(processor_);
}
int SentencePiece::UnkId() const {
  Check(processor_ != nullptr, "SentencePiece used after being moved from");
  return slm_spm_unk_id(processor_);
}

}  // namespace slm::text
