#include "train/evaluate.h"

#include <torch/torch.h>

#include <array>
#include <cmath>
#include <cstring>

#include "adapters/tts.h"
#include "audio/audio_io.h"
#include "audio/ctc.h"
#include "audio/unit_decoder.h"
#include "core/error.h"
#include "train/interleave.h"
#include "train/metrics.h"

namespace slm::train {
namespace {

using nlohmann::json;

// The written question in the form the starter backbone was pretrained on ("dog: a member of the
// genus canis..."): "what is a dog" -> "dog:". Other questions are kept as they are, with "?".
std::string TextQuestionPrompt(const std::string& question) {
  std::string head = question;
  for (const char* lead : {"what is ", "what are "})
    if (head.rfind(lead, 0) == 0) {
      head = head.substr(std::strlen(lead));
      for (const char* article : {"a ", "an ", "the "})
        if (head.rfind(article, 0) == 0) head = head.substr(std::strlen(article));
      return head + ":";
    }
  return question + "?";
}

// Likelihood ranking of the right answer among 4 candidates (it and the answers of three other
// questions of the same set, fixed offsets), by mean NLL per answer token: once with the spoken
// question through the adapters, once with the written question as text (TextQuestionPrompt)
// through the backbone alone (LoRA scaled to 0), the upper bound the frozen LM allows.
std::pair<double, double> RankAnswers(adapters::MultimodalLMImpl& model, const Dataset& valid,
                                      const std::vector<int64_t>& items, FeatureCache& cache) {
  const size_t n = items.size();
  int64_t speech_hits = 0, text_hits = 0;
  const double lora_scale = model.Backbone()->HasLora() ? model.Backbone()->LoraScale() : 1.0;
  for (size_t i = 0; i < n; ++i) {
    const DatasetItem& item = valid.Item(items[i]);
    std::vector<std::string> candidates = {item.example.target};
    for (size_t offset : {1, 7, 13, 19, 23, 29}) {
      if (candidates.size() == 4) break;
      const std::string& other = valid.Item(items[(i + offset) % n]).example.target;
      if (std::find(candidates.begin(), candidates.end(), other) == candidates.end()) candidates.push_back(other);
    }
    if (candidates.size() < 4) continue;
    const auto base = valid.Materialize({items[i]}, model, cache)[0];
    for (int pass = 0; pass < 2; ++pass) {
      std::vector<adapters::MultimodalExample> rows;
      for (const std::string& candidate : candidates) {
        adapters::MultimodalExample e = base;
        if (pass == 1) {
          e.prompt = TextQuestionPrompt(item.entry.prompt);
          e.speech.clear();
        }
        e.target = candidate;
        rows.push_back(e);
      }
      if (pass == 1 && model.Backbone()->HasLora()) model.Backbone()->SetLoraScale(0.0);
      const auto [nll, counts] = model.TargetNll(model.Prepare(rows, text::PaddingSide::kRight));
      if (pass == 1 && model.Backbone()->HasLora()) model.Backbone()->SetLoraScale(lora_scale);
      int64_t best = 0;
      for (int64_t c = 1; c < 4; ++c)
        if (nll[c].item<double>() / counts[c] < nll[best].item<double>() / counts[best]) best = c;
      (pass == 0 ? speech_hits : text_hits) += best == 0 ? 1 : 0;
    }
  }
  return {double(speech_hits) / n, double(text_hits) / n};
}

// Round-trip intelligibility of a tts source: each entry's text is synthesized (TtsPipeline with
// model.unit_decoder, greedy) and transcribed by eval.asr_encoder's CTC head, next to the same
// ASR on the entry's own recording (the reference): WER/CER of both, their ratio, the duration
// ratio and the real-time factor of synthesis. Entries with units are also resynthesized from those
// units (decoder + vocoder, no LM): the ceiling the unit path leaves the LM, which tells a weak
// adapter from a weak decoder.
json EvaluateTts(adapters::MultimodalLMImpl& model, const Dataset& valid, const std::vector<int64_t>& items,
                 const EvalOptions& eval, const std::string& tts_prompt) {
  Check(!model.Config().unit_decoder.empty(), "eval of task tts: no model.unit_decoder to turn units into speech");
  Check(!eval.asr_encoder.empty(), "eval of task tts: no eval.asr_encoder (a speech encoder with a CTC head)");
  adapters::TtsPipeline tts(
      adapters::MultimodalLM(std::dynamic_pointer_cast<adapters::MultimodalLMImpl>(model.shared_from_this())));
  const audio::CtcTranscriber asr(eval.asr_encoder);
  adapters::TtsOptions options;
  options.prompt_template = tts_prompt;
  EditCounts synth_words, synth_chars, ref_words, ref_chars, resynth_words, resynth_chars;
  int64_t resynthesized = 0;
  double synth_seconds = 0, ref_seconds = 0, compute_seconds = 0;
  int64_t with_reference = 0;
  json samples = json::array();
  for (const int64_t i : items) {
    const DatasetItem& item = valid.Item(i);
    const std::string& text = item.entry.text;
    const adapters::TtsResult said = tts.Synthesize(text, options);
    const std::string heard = said.samples.empty() ? "" : asr.Transcribe(said.samples);
    synth_words += WordErrors(text, heard);
    synth_chars += CharErrors(text, heard);
    synth_seconds += double(said.samples.size()) / said.sample_rate;
    compute_seconds += said.seconds;
    std::string reference_heard;
    if (!item.example.reference_audio.empty()) {
      const auto recording = audio::Read(item.example.reference_audio);
      const std::vector<float> samples_16k = audio::Resample(recording.samples, recording.sample_rate, 16000);
      reference_heard = asr.Transcribe(samples_16k);
      ref_words += WordErrors(text, reference_heard);
      ref_chars += CharErrors(text, reference_heard);
      ref_seconds += double(samples_16k.size()) / 16000.0;
      ++with_reference;
    }
    std::string resynthesized_heard;
    if (!item.example.units.empty()) {
      resynthesized_heard = asr.Transcribe(tts.Speak(item.example.units));
      resynth_words += WordErrors(text, resynthesized_heard);
      resynth_chars += CharErrors(text, resynthesized_heard);
      ++resynthesized;
    }
    if (samples.size() < 5)
      samples.push_back({{"text", text},
                         {"synthesized_heard", heard},
                         {"reference_heard", reference_heard},
                         {"resynthesized_heard", resynthesized_heard}});
  }
  json r = {{"task", "tts"}, {"examples", items.size()}, {"round_trip_wer", synth_words.Rate()},
            {"round_trip_cer", synth_chars.Rate()}, {"synthesized_seconds", synth_seconds},
            {"real_time_factor", synth_seconds > 0 ? compute_seconds / synth_seconds : 0.0}, {"samples", samples}};
  if (with_reference > 0) {
    r["reference_round_trip_wer"] = ref_words.Rate();
    r["reference_round_trip_cer"] = ref_chars.Rate();
    r["wer_ratio_vs_reference"] = ref_words.Rate() > 0 ? synth_words.Rate() / ref_words.Rate() : 0.0;
    r["duration_ratio_vs_reference"] = ref_seconds > 0 ? synth_seconds / ref_seconds : 0.0;
  }
  if (resynthesized > 0) {
    r["resynthesis_round_trip_wer"] = resynth_words.Rate();
    r["resynthesis_round_trip_cer"] = resynth_chars.Rate();
  }
  return r;
}

// Likelihood pairs on an interleaved source, as SIMS scores spoken/text StoryCloze: each held-out
// utterance's first half (words [0, n/2)) is the context, its own second half the right ending and
// the second half of the utterance N/2 items further the wrong one; a pair counts 1 when the right
// ending has the lower mean NLL per token, 0.5 on a tie. Context and ending each spoken (units) or
// written (text tokens): S->S, S->T, T->S, T->T, plus T->T through the untouched backbone (LoRA
// scaled to 0, logits over the base vocabulary only: the text-retention reference "Orig"). A marker precedes the context and the ending
// when its modality differs; the ending's tokens alone are scored. In frames mode spoken context is
// the span's audio through the speech adapter, and spoken endings cannot be scored (frames are
// read, not predicted): S->S and T->S are null.
json EvaluateInterleaved(adapters::MultimodalLMImpl& model, const Dataset& valid, const std::vector<int64_t>& items,
                         const InterleaveOptions& options, int64_t batch_size, FeatureCache& cache) {
  const bool frames = options.speech == "frames";
  const InterleaveIds ids = InterleaveIdsOf(model, options.speech);
  std::vector<const DatasetItem*> utterances;
  for (const int64_t i : items)
    if (valid.Item(i).aligned && valid.Item(i).aligned->Words() >= 2) utterances.push_back(&valid.Item(i));
  const size_t n = utterances.size();
  json r = {{"pairs", n >= 2 ? n : 0}, {"speech", options.speech}};
  if (n < 2) return r;
  struct Setting {
    const char* name;
    bool context_speech, ending_speech, orig;
  };
  const Setting settings[] = {{"S->S", true, true, false}, {"S->T", true, false, false}, {"T->S", false, true, false},
                              {"T->T", false, false, false}, {"Orig T->T", false, false, true}};
  const bool lora = model.Backbone()->HasLora();
  const double lora_scale = lora ? model.Backbone()->LoraScale() : 1.0;
  for (const Setting& setting : settings) {
    if (frames && setting.ending_speech) {
      r[setting.name] = nullptr;
      continue;
    }
    std::vector<adapters::MultimodalExample> rows;  // (right, wrong) per pair
    for (size_t i = 0; i < n; ++i) {
      const AlignedUtterance& u = *utterances[i]->aligned;
      const AlignedUtterance& other = *utterances[(i + n / 2) % n == i ? (i + 1) % n : (i + n / 2) % n]->aligned;
      adapters::MultimodalExample context;
      context.tokens = {ids.bos, setting.context_speech ? ids.speech_marker : ids.text_marker};
      AppendSpan(u, 0, u.Words() / 2, setting.context_speech, ids, context.tokens);
      if (frames && setting.context_speech) {
        const std::string& path = utterances[i]->example.reference_audio;
        const torch::Tensor mel = cache.Get("mel:" + path, [&] { return model.SpeechFeatures(audio::Read(path).samples); });
        const std::pair<double, double> first_half = {u.word_seconds[0].first, u.word_seconds[u.Words() / 2 - 1].second};
        context.speech.push_back(ClipFeatures(mel, first_half, model.SpeechFeatureRate()));
      }
      if (setting.ending_speech != setting.context_speech)
        context.tokens.push_back(setting.ending_speech ? ids.speech_marker : ids.text_marker);
      std::vector<adapters::MultimodalExample> pair;
      for (const AlignedUtterance* ending : {&u, &other}) {
        adapters::MultimodalExample e = context;
        e.score_from = static_cast<int64_t>(context.tokens.size());
        AppendSpan(*ending, ending->Words() / 2, ending->Words(), setting.ending_speech, ids, e.tokens);
        if (e.score_from < static_cast<int64_t>(e.tokens.size())) pair.push_back(std::move(e));
      }
      if (pair.size() == 2) rows.insert(rows.end(), pair.begin(), pair.end());  // else an ending without units
    }
    // The untouched backbone: no LoRA, and no unit rows competing in its softmax.
    const bool predicts_extra = model.Backbone()->PredictsExtraVocabulary();
    if (setting.orig) {
      if (lora) model.Backbone()->SetLoraScale(0.0);
      model.Backbone()->SetPredictsExtraVocabulary(false);
    }
    std::vector<double> mean_nll;
    const size_t chunk = 2 * static_cast<size_t>(std::max<int64_t>(1, batch_size / 2));
    for (size_t start = 0; start < rows.size(); start += chunk) {
      const std::vector<adapters::MultimodalExample> part(rows.begin() + start,
                                                          rows.begin() + std::min(rows.size(), start + chunk));
      const auto [nll, counts] = model.TargetNll(model.Prepare(part, text::PaddingSide::kRight));
      for (size_t k = 0; k < part.size(); ++k) mean_nll.push_back(nll[k].item<double>() / counts[k]);
    }
    if (setting.orig) {
      if (lora) model.Backbone()->SetLoraScale(lora_scale);
      model.Backbone()->SetPredictsExtraVocabulary(predicts_extra);
    }
    double score = 0;
    const int64_t pairs = static_cast<int64_t>(mean_nll.size() / 2);
    for (size_t k = 0; k + 1 < mean_nll.size(); k += 2)
      score += mean_nll[k] < mean_nll[k + 1] ? 1.0 : mean_nll[k] == mean_nll[k + 1] ? 0.5 : 0.0;
    r[setting.name] = pairs ? score / pairs : 0.0;
    r[std::string(setting.name) + " pairs"] = pairs;
  }
  return r;
}
// Exact match and samples of greedy decoding: every task whose target is text.
class GenerationEvaluator : public TaskEvaluator {
 public:
  void Finish(EvalSource&, json&) override {}
};

// WER/CER of the transcripts; with eval.ctc_weight > 0 the decoding is CTC-guided, and the LM alone
// and the encoder's greedy CTC are scored beside it on the same batch.
class AsrEvaluator : public TaskEvaluator {
 public:
  void Check(adapters::MultimodalLMImpl& model, const EvalOptions& eval) const override {
    if (eval.ctc_weight > 0) model.RequireCtcHead("eval.ctc_weight");
  }
  std::vector<std::string> Generate(EvalSource& s, const std::vector<adapters::MultimodalExample>& examples) override {
    if (s.eval.ctc_weight <= 0) return TaskEvaluator::Generate(s, examples);
    text::GenerationOptions options;
    options.max_new_tokens = s.eval.max_new_tokens;
    const text::GenerationResult generated =
        s.model.Generate(examples, options, nullptr, {s.eval.ctc_weight, s.eval.ctc_candidates});
    const text::GenerationResult alone = s.model.Generate(examples, options);
    const std::vector<std::string> heard = s.model.CtcTranscripts(examples);
    std::vector<std::string> hypotheses;
    for (size_t row = 0; row < examples.size(); ++row) {
      const std::string lm = s.model.Tokenizer().Decode(alone.tokens[row], true);
      lm_words_ += WordErrors(examples[row].target, lm);
      lm_chars_ += CharErrors(examples[row].target, lm);
      ctc_words_ += WordErrors(examples[row].target, heard[row]);
      ctc_chars_ += CharErrors(examples[row].target, heard[row]);
      hypotheses.push_back(s.model.Tokenizer().Decode(generated.tokens[row], true));
    }
    return hypotheses;
  }
  void Score(const std::string& reference, const std::string& hypothesis) override {
    words_ += WordErrors(reference, hypothesis);
    chars_ += CharErrors(reference, hypothesis);
  }
  void Finish(EvalSource& s, json& r) override {
    r["wer"] = words_.Rate();
    r["cer"] = chars_.Rate();
    if (s.eval.ctc_weight > 0) {
      r["ctc_weight"] = s.eval.ctc_weight;
      r["lm_only_wer"] = lm_words_.Rate();
      r["lm_only_cer"] = lm_chars_.Rate();
      r["ctc_greedy_wer"] = ctc_words_.Rate();
      r["ctc_greedy_cer"] = ctc_chars_.Rate();
    }
  }

 private:
  EditCounts words_, chars_, lm_words_, lm_chars_, ctc_words_, ctc_chars_;
};

// Likelihood ranking of the answers (RankAnswers), beside exact match; it needs 4 distinct answers.
class SqaEvaluator : public TaskEvaluator {
 public:
  void Finish(EvalSource& s, json& r) override {
    if (s.items.size() < 4) return;
    const auto [speech_accuracy, text_accuracy] = RankAnswers(s.model, s.valid, s.items, s.cache);
    r["ranking_accuracy"] = speech_accuracy;
    r["text_ranking_accuracy"] = text_accuracy;
    r["ranking_chance"] = 0.25;
  }
};

// Which caption attributes come out right, in all and per slot.
class CaptionEvaluator : public TaskEvaluator {
 public:
  void Score(const std::string& reference, const std::string& hypothesis) override {
    const auto want = CaptionAttributes(reference), got = CaptionAttributes(hypothesis);
    total_ += 5;
    for (size_t k = 0; k < want.size() && k < got.size(); ++k) {
      right_ += want[k] == got[k];
      slot_right_[k] += want[k] == got[k];
    }
  }
  void Finish(EvalSource& s, json& r) override {
    r["attribute_accuracy"] = total_ ? double(right_) / total_ : 0.0;
    json by_slot = json::object();
    for (size_t k = 0; k < kCaptionAttributeNames.size(); ++k)
      by_slot[kCaptionAttributeNames[k]] = s.items.empty() ? 0.0 : double(slot_right_[k]) / double(s.items.size());
    r["attribute_accuracy_by_slot"] = by_slot;
  }

 private:
  int64_t right_ = 0, total_ = 0;
  std::array<int64_t, kCaptionAttributeNames.size()> slot_right_{};
};

class TextEvaluator : public TaskEvaluator {
 public:
  void Finish(EvalSource& s, json& r) override { r["perplexity"] = s.tokens ? std::exp(s.nll / s.tokens) : 0.0; }
};

// The round trip needs a unit decoder and an ASR; without them the unit NLL alone scores.
class TtsEvaluator : public TaskEvaluator {
 public:
  void Check(adapters::MultimodalLMImpl& model, const EvalOptions&) const override {
    // The decoder loads only at the first evaluation: a wrong path or a decoder for other units is
    // found now, not after the training it was meant to measure.
    if (!model.Config().unit_decoder.empty())
      audio::UnitDecoderConfig::Read(model.Config().unit_decoder, model.SpeechUnitsHash(), "model.unit_decoder");
  }
  bool Generates() const override { return false; }
  void Finish(EvalSource& s, json& r) override {
    const std::string missing = s.model.Config().unit_decoder.empty() ? "no model.unit_decoder"
                                : s.eval.asr_encoder.empty()         ? "no eval.asr_encoder"
                                                                     : "";
    json t = missing.empty() ? EvaluateTts(s.model, s.valid, s.items, s.eval, s.source.PromptTemplate())
                             : json{{"task", r["task"]}, {"examples", s.items.size()}, {"round_trip", "skipped: " + missing}};
    t["loss"] = r["loss"];
    r = t;
  }
};

class InterleavedEvaluator : public TaskEvaluator {
 public:
  bool Generates() const override { return false; }
  void Finish(EvalSource& s, json& r) override {
    json t = EvaluateInterleaved(s.model, s.valid, s.items, s.source.interleave, s.eval.batch_size, s.cache);
    t["task"] = r["task"];
    t["examples"] = s.items.size();
    t["loss"] = r["loss"];
    r = t;
  }
};

}  // namespace

void TaskEvaluator::Check(adapters::MultimodalLMImpl&, const EvalOptions&) const {}

std::vector<std::string> TaskEvaluator::Generate(EvalSource& s, const std::vector<adapters::MultimodalExample>& examples) {
  text::GenerationOptions options;
  options.max_new_tokens = s.eval.max_new_tokens;
  const text::GenerationResult generated = s.model.Generate(examples, options);
  std::vector<std::string> hypotheses;
  for (const std::vector<int64_t>& tokens : generated.tokens) hypotheses.push_back(s.model.Tokenizer().Decode(tokens, true));
  return hypotheses;
}

void TaskEvaluator::Score(const std::string&, const std::string&) {}

std::unique_ptr<TaskEvaluator> MakeGenerationEvaluator() { return std::make_unique<GenerationEvaluator>(); }
std::unique_ptr<TaskEvaluator> MakeAsrEvaluator() { return std::make_unique<AsrEvaluator>(); }
std::unique_ptr<TaskEvaluator> MakeSqaEvaluator() { return std::make_unique<SqaEvaluator>(); }
std::unique_ptr<TaskEvaluator> MakeCaptionEvaluator() { return std::make_unique<CaptionEvaluator>(); }
std::unique_ptr<TaskEvaluator> MakeTextEvaluator() { return std::make_unique<TextEvaluator>(); }
std::unique_ptr<TaskEvaluator> MakeTtsEvaluator() { return std::make_unique<TtsEvaluator>(); }
std::unique_ptr<TaskEvaluator> MakeInterleavedEvaluator() { return std::make_unique<InterleavedEvaluator>(); }

void CheckEvaluation(adapters::MultimodalLMImpl& model, const std::vector<DataSourceConfig>& sources,
                     const EvalOptions& eval) {
  for (const DataSourceConfig& source : sources) GetTask(source.task).evaluator()->Check(model, eval);
}

json Evaluate(adapters::MultimodalLMImpl& model, const Dataset& valid, const EvalOptions& eval, FeatureCache& cache) {
  torch::NoGradGuard no_grad;
  const bool was_training = model.is_training();
  model.eval();
  // The discount applies to every score below (RankAnswers and the Orig settings scale from it).
  const bool discount = model.Backbone()->HasLora() && eval.lora_discount != 1.0;
  const double lora_scale = model.Backbone()->HasLora() ? model.Backbone()->LoraScale() : 1.0;
  if (discount) model.Backbone()->SetLoraScale(lora_scale * eval.lora_discount);
  json out = json::object();
  double loss_sum = 0;
  int64_t loss_sources = 0;
  for (size_t s = 0; s < valid.Sources().size(); ++s) {
    const DataSourceConfig& source = valid.Sources()[s];
    std::vector<int64_t> items;
    for (size_t i = 0; i < valid.Size(); ++i)
      if (valid.Item(i).source == static_cast<int>(s)) items.push_back(static_cast<int64_t>(i));
    if (eval.max_examples > 0 && static_cast<int64_t>(items.size()) > eval.max_examples)
      items.resize(eval.max_examples);
    const std::unique_ptr<TaskEvaluator> evaluator = GetTask(source.task).evaluator();
    const bool generates = evaluator->Generates();
    EvalSource context{model, valid, source, items, eval, cache};
    int64_t exact = 0;
    json samples = json::array();
    for (size_t start = 0; start < items.size(); start += eval.batch_size) {
      const std::vector<int64_t> batch(items.begin() + start,
                                       items.begin() + std::min(items.size(), start + eval.batch_size));
      const auto examples = valid.Materialize(batch, model, cache);
      const adapters::MultimodalBatch teacher = model.Prepare(examples, text::PaddingSide::kRight);
      context.nll += model.Loss(teacher).item<double>() * teacher.target_tokens;
      context.tokens += teacher.target_tokens;
      if (!generates) continue;
      const std::vector<std::string> hypotheses = evaluator->Generate(context, examples);
      for (size_t row = 0; row < batch.size(); ++row) {
        const std::string& reference = examples[row].target;
        const std::string& hypothesis = hypotheses[row];
        evaluator->Score(reference, hypothesis);
        if (NormalizeForScoring(reference) == NormalizeForScoring(hypothesis)) ++exact;
        if (samples.size() < 5) samples.push_back({{"reference", reference}, {"hypothesis", hypothesis}});
      }
    }
    const double loss = context.tokens ? context.nll / context.tokens : 0.0;
    json r = {{"task", source.task}, {"examples", items.size()}, {"loss", loss}};
    if (generates) {
      r["exact_match"] = items.empty() ? 0.0 : double(exact) / items.size();
      r["samples"] = samples;
    }
    evaluator->Finish(context, r);
    out[source.manifest + " (" + source.task + ")"] = r;
    loss_sum += loss;
    ++loss_sources;
  }
  out["loss"] = loss_sources ? loss_sum / loss_sources : 0.0;
  if (discount) {
    model.Backbone()->SetLoraScale(lora_scale);
    out["lora_discount"] = eval.lora_discount;
  }
  if (was_training) model.train();
  return out;
}

}  // namespace slm::train
