/* slm_spm_shim: a narrow C API over a private, static copy of sentencepiece.
 *
 * Why a C API in its own shared library (docs/HAZARDS.md hazards 1 and 2): sentencepiece carries its own
 * protobuf-lite, which must never meet the protobuf that LibTorch and gRPC use in the same process,
 * and its headers cannot share a translation unit with gRPC's absl. libslm_spm_shim.so links the
 * static sentencepiece archives with -Wl,--exclude-libs,ALL and a version script, so the only
 * dynamic symbols it defines are the slm_spm_* functions below; nothing here mentions a
 * sentencepiece, protobuf or C++ standard-library type. Use it through slm::text::SentencePiece
 * (text/sentencepiece.h) rather than directly.
 *
 * Error behaviour: no function lets a C++ exception escape. Functions returning slm_spm_status
 * return SLM_SPM_OK (0) on success; on failure they leave their outputs untouched and record a
 * message that slm_spm_last_error() returns. The status values are those of sentencepiece's
 * util::StatusCode (the absl/gRPC canonical codes).
 *
 * Memory: buffers returned through `char**`, `int32_t**` and `size_t**` outputs are owned by the
 * caller and released with slm_spm_free(). Processors are released with slm_spm_destroy().
 *
 * Thread-safety: a loaded processor is immutable; the encode/decode/lookup functions take it by
 * const pointer and may be called concurrently from any number of threads. The last error message
 * is thread-local. slm_spm_train() touches process-wide sentencepiece state (log level, random
 * seed), so concurrent calls to it are serialized internally.
 */
#ifndef SLM_TEXT_SPM_SHIM_SPM_SHIM_H_
#define SLM_TEXT_SPM_SHIM_SPM_SHIM_H_

#include <stddef.h>
#include <stdint.h>

#if defined(SLM_SPM_SHIM_BUILDING)
#define SLM_SPM_API __attribute__((visibility("default")))
#else
#define SLM_SPM_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

typedef int slm_spm_status;

enum {
  SLM_SPM_OK = 0,
  SLM_SPM_CANCELLED = 1,
  SLM_SPM_UNKNOWN = 2,
  SLM_SPM_INVALID_ARGUMENT = 3,
  SLM_SPM_DEADLINE_EXCEEDED = 4,
  SLM_SPM_NOT_FOUND = 5,
  SLM_SPM_ALREADY_EXISTS = 6,
  SLM_SPM_PERMISSION_DENIED = 7,
  SLM_SPM_RESOURCE_EXHAUSTED = 8,
  SLM_SPM_FAILED_PRECONDITION = 9,
  SLM_SPM_ABORTED = 10,
  SLM_SPM_OUT_OF_RANGE = 11,
  SLM_SPM_UNIMPLEMENTED = 12,
  SLM_SPM_INTERNAL = 13,
  SLM_SPM_UNAVAILABLE = 14,
  SLM_SPM_DATA_LOSS = 15,
  SLM_SPM_UNAUTHENTICATED = 16,
};

/* What a vocabulary entry is (sentencepiece's piece types that matter to callers). */
enum {
  SLM_SPM_PIECE_NORMAL = 0,
  SLM_SPM_PIECE_UNKNOWN = 1, /* the <unk> piece */
  SLM_SPM_PIECE_CONTROL = 2, /* <s>, </s>, <pad>, control symbols: decode to nothing */
  SLM_SPM_PIECE_UNUSED = 3,
  SLM_SPM_PIECE_BYTE = 4, /* <0xNN> byte-fallback pieces */
};

typedef struct slm_spm_processor slm_spm_processor;

/* The message of the last failed call on this thread ("" if none). Valid until the next slm_spm_*
 * call on the same thread. */
SLM_SPM_API const char* slm_spm_last_error(void);

/* Releases a buffer returned by this library. NULL is ignored. */
SLM_SPM_API void slm_spm_free(void* buffer);

/* Trains a model from `input_path` (UTF-8 text, one sentence per line) and writes
 * `<model_prefix>.model` and `<model_prefix>.vocab`. `options` holds sentencepiece trainer flags
 * separated by whitespace, e.g. "--vocab_size=8000 --model_type=bpe --minloglevel=2" (so no value
 * may contain whitespace; the two paths are separate arguments because they may). Beyond the
 * trainer's own flags, "--random_seed=N" seeds sentencepiece's sampling. "--input" and
 * "--model_prefix" in `options` are rejected. May be NULL or "" for all defaults. */
SLM_SPM_API slm_spm_status slm_spm_train(const char* input_path, const char* model_prefix,
                                         const char* options);

/* Loads a model file / a serialized ModelProto. On success *out owns a new processor. */
SLM_SPM_API slm_spm_status slm_spm_load_file(const char* path, slm_spm_processor** out);
SLM_SPM_API slm_spm_status slm_spm_load_bytes(const void* data, size_t size,
                                              slm_spm_processor** out);
SLM_SPM_API void slm_spm_destroy(slm_spm_processor* processor);

/* Text (UTF-8, `size` bytes, need not be NUL-terminated) to ids. *ids (may be NULL when *count is
 * 0) is freed with slm_spm_free. */
SLM_SPM_API slm_spm_status slm_spm_encode_ids(const slm_spm_processor* processor, const char* text,
                                              size_t size, int32_t** ids, size_t* count);

/* Text to pieces: *bytes holds the pieces back to back, (*lengths)[i] is the byte length of piece
 * i, *count the number of pieces. Both buffers are freed with slm_spm_free. */
SLM_SPM_API slm_spm_status slm_spm_encode_pieces(const slm_spm_processor* processor,
                                                 const char* text, size_t size, char** bytes,
                                                 size_t** lengths, size_t* count);

/* Ids to text. Every id must be in [0, vocab size): SLM_SPM_OUT_OF_RANGE otherwise. *text is
 * NUL-terminated (the terminator is not counted in *size) and freed with slm_spm_free. */
SLM_SPM_API slm_spm_status slm_spm_decode_ids(const slm_spm_processor* processor,
                                              const int32_t* ids, size_t count, char** text,
                                              size_t* size);

/* The id of `piece` (`size` bytes), or the unknown id when the vocabulary has no such piece. */
SLM_SPM_API int32_t slm_spm_piece_to_id(const slm_spm_processor* processor, const char* piece,
                                        size_t size);

/* The piece of `id`; *piece points into the processor and lives as long as it does.
 * SLM_SPM_OUT_OF_RANGE when id is not in [0, vocab size). */
SLM_SPM_API slm_spm_status slm_spm_id_to_piece(const slm_spm_processor* processor, int32_t id,
                                               const char** piece, size_t* size);

/* One of SLM_SPM_PIECE_*; SLM_SPM_OUT_OF_RANGE for a bad id. */
SLM_SPM_API slm_spm_status slm_spm_piece_kind(const slm_spm_processor* processor, int32_t id,
                                              int* kind);

SLM_SPM_API int32_t slm_spm_vocab_size(const slm_spm_processor* processor);
/* Special ids; -1 when the model was trained without that token. */
SLM_SPM_API int32_t slm_spm_bos_id(const slm_spm_processor* processor);
SLM_SPM_API int32_t slm_spm_eos_id(const slm_spm_processor* processor);
SLM_SPM_API int32_t slm_spm_pad_id(const slm_spm_processor* processor);
SLM_SPM_API int32_t slm_spm_unk_id(const slm_spm_processor* processor);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* SLM_TEXT_SPM_SHIM_SPM_SHIM_H_ */
