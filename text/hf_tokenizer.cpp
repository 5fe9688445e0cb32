#include "text/hf_tokenizer.h"

#include "core/error.h"

namespace slm::text {

std::unique_ptr<TokenizerModel> LoadHfTokenizerModel(const std::string& path) {
  throw Error(Str("'", path, "': tokenizer.json is not supported yet"));
}

}  // namespace slm::text
