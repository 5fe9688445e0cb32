#include "train/metrics.h"

#include <algorithm>

namespace slm::train {

double EditCounts::Rate() const {
  if (reference_length == 0) return Errors() == 0 ? 0.0 : 1.0;
  return static_cast<double>(Errors()) / static_cast<double>(reference_length);
}

EditCounts& EditCounts::operator+=(const EditCounts& o) {
  substitutions += o.substitutions;
  deletions += o.deletions;
  insertions += o.insertions;
  reference_length += o.reference_length;
  return *this;
}

EditCounts AlignTokens(const std::vector<std::string>& ref, const std::vector<std::string>& hyp) {
  // cost[i][j] over prefixes; ties prefer substitution, then deletion, then insertion, so that
  // the breakdown is deterministic.
  const size_t n = ref.size(), m = hyp.size();
  std::vector<std::vector<int64_t>> cost(n + 1, std::vector<int64_t>(m + 1));
  for (size_t i = 0; i <= n; ++i) cost[i][0] = static_cast<int64_t>(i);
  for (size_t j = 0; j <= m; ++j) cost[0][j] = static_cast<int64_t>(j);
  for (size_t i = 1; i <= n; ++i)
    for (size_t j = 1; j <= m; ++j)
      cost[i][j] = std::min({cost[i - 1][j - 1] + (ref[i - 1] == hyp[j - 1] ? 0 : 1),
                             cost[i - 1][j] + 1, cost[i][j - 1] + 1});
  EditCounts counts;
  counts.reference_length = static_cast<int64_t>(n);
  size_t i = n, j = m;
  while (i > 0 || j > 0) {
    if (i > 0 && j > 0 && cost[i][j] == cost[i - 1][j - 1] + (ref[i - 1] == hyp[j - 1] ? 0 : 1)) {
      if (ref[i - 1] != hyp[j - 1]) ++counts.substitutions;
      --i;
      --j;
    } else if (i > 0 && cost[i][j] == cost[i - 1][j] + 1) {
      ++counts.deletions;
      --i;
    } else {
      ++counts.insertions;
      --j;
    }
  }
  return counts;
}

EditCounts WordErrors(const std::string& reference, const std::string& hypothesis) {
  return AlignTokens(ScoringWords(reference), ScoringWords(hypothesis));
}

EditCounts CharErrors(const std::string& reference, const std::string& hypothesis) {
  auto chars = [](const std::string& s) {
    std::vector<std::string> out;
    for (char c : s) out.emplace_back(1, c);
    return out;
  };
  return AlignTokens(chars(NormalizeForScoring(reference)), chars(NormalizeForScoring(hypothesis)));
}

std::vector<std::string> CaptionAttributes(const std::string& caption) {
  const std::vector<std::string> w = ScoringWords(caption);
  auto article = [](const std::string& x) { return x == "a" || x == "an"; };
  std::vector<std::string> scene;
  size_t i = 0;
  if (w.size() < 7 || !article(w[0])) return {};
  scene = {w[1], w[2]};
  i = 3;
  std::string relation = w[i++];
  if ((relation == "left" || relation == "right") && i < w.size() && w[i] == "of") relation += " " + w[i++];
  if (i + 3 != w.size() || !article(w[i])) return {};
  scene.push_back(relation);
  scene.push_back(w[i + 1]);
  scene.push_back(w[i + 2]);
  if (relation == "below" || relation == "right of") {
    return {scene[3], scene[4], relation == "below" ? "above" : "left of", scene[0], scene[1]};
  }
  return scene;
}

}  // namespace slm::train
