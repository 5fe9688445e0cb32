// MultimodalLM's use of the speech encoder's CTC head: binding it into a CTC projector (ctc_embed:
// symbols as backbone embeddings), the encoder's own transcripts, and CTC-guided decoding
// (text/ctc_guide.h) over the head's prefix scores. Split from multimodal.cpp, which builds,
// prepares and runs the model.
#include <mutex>

#include "adapters/multimodal.h"
#include "audio/ctc.h"
#include "core/error.h"
#include "text/ctc_guide.h"

namespace slm::adapters {

void MultimodalLMImpl::BindCtcHead() {
  const audio::CtcHead head = audio::LoadCtcHead(config_.speech.encoder, speech_encoder_->Config().d_model,
                                                 "model.speech.projector ctc_embed", device_, dtype_);
  const torch::Tensor w = head->proj->weight, b = head->proj->bias;
  // Symbol i (1 = space, 2 = apostrophe, 3.. = letters) -> the backbone's piece for it; the space
  // is the tokenizer's word-start marker ("▁" for sentencepiece, "Ġ" for byte-level BPE).
  const std::string boundary = text::WordStartMarker(*tokenizer_);
  std::vector<int64_t> pieces;
  for (int64_t symbol = 1; symbol < audio::CtcAlphabet::kSize; ++symbol) {
    const std::string text = audio::CtcAlphabet::Decode({symbol});
    const std::string piece = text == " " ? boundary : text;
    const int64_t id = tokenizer_->PieceToId(piece);
    Check(id != tokenizer_->UnkId(), "model.speech.projector ctc_embed: the backbone's tokenizer has no piece '",
          piece, "' for CTC symbol ", symbol);
    pieces.push_back(id);
  }
  torch::NoGradGuard no_grad;
  const torch::Tensor symbols = backbone_->EmbedTokens(torch::tensor(pieces, torch::kLong).to(device_));
  BindCtcEmbed(*speech_projector_, w, b, symbols);
  if (config_.speech.projector.units == "words") {
    // The projector keeps handles to the tokenizer and backbone this model owns for its lifetime.
    WordPieces words;
    words.encode = [tokenizer = tokenizer_](const std::string& word) {
      return tokenizer->Encode(word, /*add_bos=*/false, /*add_eos=*/false);
    };
    words.embed = [backbone = backbone_](const torch::Tensor& ids) mutable { return backbone->EmbedTokens(ids); };
    words.empty_piece = pieces[0];  // the word boundary
    BindCtcWords(*speech_projector_, std::move(words));
  }
}

namespace {

// A CTC head's scores of one clip for text::CtcGuidedDecoding: spoken characters are
// audio::CtcAlphabet's symbols one to one (' ' = the space, the apostrophe, the letters).
class CtcClipScorer : public text::SpokenScorer {
 public:
  CtcClipScorer(const torch::Tensor& log_probs, const std::vector<int64_t>& greedy)
      : scorer_(log_probs), transcript_(audio::CtcAlphabet::Decode(greedy)) {}
  double Prefix(const std::string& spoken) override { return scorer_.Prefix(Symbols(spoken)); }
  double Full(const std::string& spoken) override { return scorer_.Full(Symbols(spoken)); }
  const std::string& Transcript() const override { return transcript_; }

 private:
  static std::vector<int64_t> Symbols(const std::string& spoken) {
    std::vector<int64_t> out;
    out.reserve(spoken.size());
    for (const char c : spoken)
      out.push_back(c == ' ' ? audio::CtcAlphabet::kSpace : c == '\'' ? 2 : 3 + (c - 'a'));
    return out;
  }
  audio::CtcPrefixScorer scorer_;
  std::string transcript_;
};

}  // namespace

std::pair<torch::Tensor, torch::Tensor> MultimodalLMImpl::CtcLogProbs(const std::vector<MultimodalExample>& examples,
                                                                     const std::string& what) {
  torch::NoGradGuard no_grad;
  RequireCtcHead(what);
  for (size_t e = 0; e < examples.size(); ++e)
    Check(examples[e].speech.size() == 1, what, ": example ", e, " has ", examples[e].speech.size(),
          " speech clips; it transcribes exactly one per example");
  const audio::WhisperEncoderOutput encoded = EncodeSpeechFrames(examples);
  return {torch::log_softmax(ctc_head_(encoded.last_hidden_state).to(torch::kFloat), -1).to(torch::kCPU),
          encoded.lengths.to(torch::kCPU)};
}

void MultimodalLMImpl::RequireCtcHead(const std::string& what) {
  Check(!speech_encoder_.is_empty(), what, " needs a speech encoder (model.speech.encoder)");
  const std::lock_guard<std::mutex> lock(ctc_head_mutex_);
  if (ctc_head_.is_empty())
    ctc_head_ = audio::LoadCtcHead(config_.speech.encoder, speech_encoder_->Config().d_model, what, device_, dtype_);
}

std::vector<std::string> MultimodalLMImpl::CtcTranscripts(const std::vector<MultimodalExample>& examples) {
  const auto [log_probs, lengths] = CtcLogProbs(examples, "CTC transcripts");
  std::vector<std::string> out;
  for (const auto& ids : audio::CtcGreedyDecode(log_probs, lengths)) out.push_back(audio::CtcAlphabet::Decode(ids));
  return out;
}

text::GenerationOptions MultimodalLMImpl::WithCtcGuide(const std::vector<MultimodalExample>& prompts,
                                                       text::GenerationOptions options, const CtcGuide& ctc) {
  Check(ctc.candidates >= 1, "CTC-guided decoding: candidates must be >= 1, got ", ctc.candidates);
  const auto [log_probs, lengths] = CtcLogProbs(prompts, "CTC-guided decoding (eval.ctc_weight)");
  std::shared_ptr<const text::SpokenVocabulary> vocabulary;
  {
    const std::lock_guard<std::mutex> lock(ctc_head_mutex_);
    if (!spoken_vocabulary_) spoken_vocabulary_ = std::make_shared<const text::SpokenVocabulary>(*tokenizer_);
    vocabulary = spoken_vocabulary_;
  }
  std::vector<std::shared_ptr<text::SpokenScorer>> rows;
  const std::vector<std::vector<int64_t>> greedy = audio::CtcGreedyDecode(log_probs, lengths);
  for (int64_t b = 0; b < log_probs.size(0); ++b)
    rows.push_back(std::make_shared<CtcClipScorer>(log_probs[b].slice(0, 0, lengths[b].item<int64_t>()), greedy[b]));
  options.logits_processor =
      text::CtcGuidedDecoding(tokenizer_, std::move(vocabulary), std::move(rows), options.stop_token_ids, ctc);
  return options;
}

}  // namespace slm::adapters
