#include "text/ctc_guide.h"

#include <algorithm>
#include <limits>

#include "core/error.h"

namespace slm::text {
namespace {

bool IsLetter(unsigned char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
char Lower(unsigned char c) { return static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c); }

}  // namespace

std::string SpokenForm(std::string_view text) {
  std::string out;
  for (const unsigned char c : text) {
    if (IsLetter(c) || c == '\'') {
      out.push_back(Lower(c));
    } else if (!out.empty() && out.back() != ' ') {
      out.push_back(' ');
    }
  }
  if (!out.empty() && out.back() == ' ') out.pop_back();
  return out;
}

std::string WordStartMarker(const Tokenizer& tokenizer) {
  std::string pieces;
  for (const int64_t id : tokenizer.Encode("a a", false, false)) pieces += tokenizer.IdToPiece(id);
  // <prefix>a<marker>a: the marker lies between the last two "a".
  const size_t last = pieces.rfind('a');
  if (last == std::string::npos || last == 0) return "";
  const size_t before = pieces.rfind('a', last - 1);
  if (before == std::string::npos) return "";
  return pieces.substr(before + 1, last - before - 1);
}

SpokenVocabulary::SpokenVocabulary(const Tokenizer& tokenizer) : marker_(WordStartMarker(tokenizer)) {
  for (int64_t id = 0; id < tokenizer.ModelVocabSize(); ++id) {
    if (tokenizer.IsSpecial(id)) continue;
    const std::string piece = tokenizer.IdToPiece(id);
    std::string spelling;
    bool speakable = !piece.empty();
    for (size_t i = 0; i < piece.size() && speakable; ++i) {
      const unsigned char c = piece[i];
      if (!marker_.empty() && piece.compare(i, marker_.size(), marker_) == 0) {
        spelling.push_back(' ');
        i += marker_.size() - 1;
      } else {
        speakable = IsLetter(c) || c == '\'';
        spelling.push_back(Lower(c));
      }
    }
    if (speakable) entries_.push_back({id, std::move(spelling)});
  }
}

std::string SpokenVocabulary::Spelling(int64_t id) const {
  const auto it = std::lower_bound(entries_.begin(), entries_.end(), id,
                                   [](const Entry& e, int64_t wanted) { return e.id < wanted; });
  return it != entries_.end() && it->id == id ? it->spelling : std::string();
}

LogitsProcessor CtcGuidedDecoding(std::shared_ptr<const Tokenizer> tokenizer,
                                  std::shared_ptr<const SpokenVocabulary> vocabulary,
                                  std::vector<std::shared_ptr<SpokenScorer>> rows,
                                  std::vector<int64_t> stop_token_ids, const CtcGuideOptions& options) {
  Check(options.candidates >= 1, "CTC-guided decoding: candidates must be >= 1, got ", options.candidates);
  Check(tokenizer != nullptr && vocabulary != nullptr, "CTC-guided decoding: no tokenizer or spoken vocabulary");
  for (size_t b = 0; b < rows.size(); ++b) Check(rows[b] != nullptr, "CTC-guided decoding: row ", b, " has no scorer");
  auto scorers = std::make_shared<const std::vector<std::shared_ptr<SpokenScorer>>>(std::move(rows));
  return [tokenizer, vocabulary, scorers, stops = std::move(stop_token_ids), options](
             torch::Tensor& logits, const std::vector<std::vector<int64_t>>& tokens) {
    Check(logits.size(0) == static_cast<int64_t>(scorers->size()), "CTC-guided decoding: ", logits.size(0),
          " rows of logits for ", scorers->size(), " scored utterances");
    const torch::Tensor log_p = torch::log_softmax(logits, -1);
    const int64_t vocab = logits.size(1);
    const int64_t k = std::min<int64_t>(options.candidates, vocab);
    for (int64_t b = 0; b < logits.size(0); ++b) {
      SpokenScorer& scorer = *(*scorers)[b];
      const std::string& transcript = scorer.Transcript();
      std::vector<int64_t> sequence = tokens[b];
      const std::string heard = SpokenForm(tokenizer->Decode(sequence, true));
      const double before = scorer.Prefix(heard);
      const torch::Tensor top = std::get<1>(log_p[b].topk(k));
      std::vector<int64_t> candidates(top.data_ptr<int64_t>(), top.data_ptr<int64_t>() + k);
      for (const int64_t stop : stops)
        if (stop < vocab && std::find(candidates.begin(), candidates.end(), stop) == candidates.end())
          candidates.push_back(stop);
      if (heard.size() < transcript.size() && transcript.compare(0, heard.size(), heard) == 0) {
        // The transcript's rest; at the very start no word boundary precedes the first word.
        const std::string_view rest = std::string_view(transcript).substr(heard.size());
        for (const SpokenVocabulary::Entry& entry : vocabulary->Entries()) {
          const std::string& spelling = entry.spelling;
          const bool word_start = spelling[0] == ' ';
          if (heard.empty() && !word_start) continue;
          const size_t from = word_start && heard.empty() ? 1 : 0;
          const size_t length = spelling.size() - from;
          if (length == 0 || length > rest.size() || rest.compare(0, length, spelling, from, length) != 0) continue;
          if (entry.id < vocab && std::find(candidates.begin(), candidates.end(), entry.id) == candidates.end())
            candidates.push_back(entry.id);
        }
      }
      const double ending = scorer.Full(heard) - before;
      const torch::Tensor log_p_b = log_p[b];
      const auto row_log_p = log_p_b.accessor<float, 1>();
      std::vector<float> row(static_cast<size_t>(vocab), -std::numeric_limits<float>::infinity());
      for (const int64_t id : candidates) {
        double gain = ending;
        if (std::find(stops.begin(), stops.end(), id) == stops.end()) {
          sequence.push_back(id);
          const std::string extended = SpokenForm(tokenizer->Decode(sequence, true));
          sequence.pop_back();
          if (extended != heard) gain = scorer.Prefix(extended) - before;
        }
        row[id] = static_cast<float>(row_log_p[id] + options.weight * gain);
      }
      logits[b].copy_(torch::from_blob(row.data(), {vocab}, torch::kFloat));
    }
  };
}

}  // namespace slm::text
