// slm::text::SentencePiece: a trained sentencepiece model (unigram or BPE), for training, encoding
// and decoding. The full Tokenizer (chat templates, multimodal placeholder tokens) builds on it.
//
// sentencepiece itself lives behind libslm_spm_shim.so (text/spm_shim, docs/HAZARDS.md hazards 1-2): this
// header and its implementation never include a sentencepiece or protobuf header, so any
// translation unit may include it next to gRPC and LibTorch.
//
// Errors: every failure is an slm::Error whose message names the model (its path, or the name
// given to LoadFromSerialized) or the training input, and says what to do about it: a missing or
// unreadable file, a corrupt model, an id outside [0, VocabSize()), an empty training file, a
// vocabulary larger than the corpus supports. Nothing aborts or exits the process on bad input.
//
// Thread-safety: a loaded SentencePiece is immutable. Encode, EncodePieces, Decode and the lookups
// are const and may be called concurrently from any number of threads on one instance (the
// underlying sentencepiece processor is const-safe and the shim keeps its error state
// thread-local). Train may be called from any thread; the shim serializes concurrent trainings
// because sentencepiece's log level and random seed are process-wide.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

struct slm_spm_processor;

namespace slm::text {

struct SentencePieceTrainOptions {
  // UTF-8 text, one sentence per line. Lines longer than max_sentence_length bytes are skipped.
  std::string input;
  // Writes "<model_prefix>.model" (what Load reads) and "<model_prefix>.vocab" (piece<TAB>score).
  // The directory must exist.
  std::string model_prefix;
  int vocab_size = 8000;
  std::string model_type = "unigram";  // "unigram" or "bpe"
  // Fraction of characters the model must cover, in [0.98, 1.0]: 1.0 for small alphabets, 0.9995
  // for languages with a large character set (rare characters then map to unk).
  double character_coverage = 1.0;
  // Pieces that are always one token and never split (e.g. "<speech>", "<image>"). They take the
  // ids right after the special tokens, in this order.
  std::vector<std::string> user_defined_symbols;
  // Special token ids; -1 disables a token (unk cannot be disabled). Enabled ids must be distinct
  // and below vocab_size.
  int unk_id = 0;
  int bos_id = 1;
  int eos_id = 2;
  int pad_id = -1;
  // true: training fails unless exactly vocab_size pieces can be learned. false: vocab_size is an
  // upper bound, which small corpora (tests) need (docs/HAZARDS.md hazard 4).
  bool hard_vocab_limit = true;
  // Unknown UTF-8 characters become <0xNN> byte pieces instead of unk (Llama-style). Needs 256
  // vocabulary entries for the byte pieces.
  bool byte_fallback = false;
  // Sentences sampled from the input; 0 uses all of them, which together with a fixed seed makes
  // training deterministic for a given input (sampling is the only random step).
  int64_t input_sentence_size = 0;
  int max_sentence_length = 4192;  // bytes
  uint32_t seed = 0;               // seeds sentencepiece's shuffling/sampling
  int num_threads = 1;             // in [1, 128]
  bool verbose = false;            // sentencepiece's training log on stderr
};

class SentencePiece {
 public:
  // Trains a model and writes it to options.model_prefix + ".model"/".vocab". Validates the
  // options first (so that sentencepiece's own checks, some of which exit the process, are never
  // reached with values it rejects) and then runs sentencepiece's trainer.
  static void Train(const SentencePieceTrainOptions& options);

  // Loads "<prefix>.model" or any sentencepiece model file (e.g. a Llama tokenizer.model).
  static SentencePiece Load(const std::string& path);
  // Loads a serialized ModelProto held in memory; `name` stands for it in error messages.
  static SentencePiece LoadFromSerialized(const std::string& bytes,
                                          const std::string& name = "<in-memory model>");

  SentencePiece(SentencePiece&& other) noexcept;
  SentencePiece& operator=(SentencePiece&& other) noexcept;
  SentencePiece(const SentencePiece&) = delete;
  SentencePiece& operator=(const SentencePiece&) = delete;
  ~SentencePiece();

  // UTF-8 text to ids, without bos/eos (callers add special tokens). Invalid UTF-8 is not an
  // error: sentencepiece maps bad bytes to U+FFFD / unk.
  std::vector<int> Encode(std::string_view text) const;
  std::vector<std::string> EncodePieces(std::string_view text) const;
  // Ids to text. Control tokens (bos/eos/pad) decode to nothing; unk decodes to " \u2047 ".
  // slm::Error if any id is outside [0, VocabSize()).
  std::string Decode(const std::vector<int>& ids) const;

  // The id of `piece`, or UnkId() when the vocabulary has no such piece (sentencepiece's rule).
  int PieceToId(std::string_view piece) const;
  // slm::Error if id is outside [0, VocabSize()).
  std::string IdToPiece(int id) const;
  bool IsControl(int id) const;  // bos/eos/pad and other control symbols
  bool IsUnknown(int id) const;
  bool IsByte(int id) const;  // <0xNN> byte-fallback pieces

  int VocabSize() const;
  // -1 when the model has no such token.
  int BosId() const;
  int EosId() const;
  int PadId() const;
  int UnkId() const;

  // The path or name the model was loaded from (for messages).
  const std::string& Source() const { return source_; }

 private:
  SentencePiece(slm_spm_processor* processor, std::string source);
  int Kind(int id) const;
  void CheckId(int id, const char* what) const;

  slm_spm_processor* processor_ = nullptr;  // owned; null only after a move
  std::string source_;
};

}  // namespace slm::text
