#include "train/trainer.h"

#include <torch/torch.h>

#include <array>
#include <cstring>
#include <cmath>
#include <filesystem>

#include "adapters/tts.h"
#include "audio/audio_io.h"
#include "audio/ctc.h"
#include "core/device.h"
#include "core/error.h"
#include "core/fs.h"
#include "core/log.h"
#include "core/metrics_log.h"
#include "core/progress.h"
#include "core/safetensors.h"
#include "train/checkpoint.h"
#include "train/distributed.h"
#include "train/metrics.h"

namespace slm::train {
namespace {

namespace stdfs = std::filesystem;
using config::InRange;
using nlohmann::json;

std::vector<DataSourceConfig> LoadSources(config::Node node, const std::string& key,
                                          const InterleaveOptions& interleave) {
  std::vector<DataSourceConfig> sources;
  for (config::Node item : node.List(key)) {
    DataSourceConfig s;
    s.interleave = interleave;  // data.interleave, then the source's own keys on top
    s.Load(item);
    sources.push_back(s);
  }
  return sources;
}

// adapter_dir/tasks.json: {"tasks": {"<task>": "<prompt template>", ...}} of the training sources,
// so that a server knows what an adapter was trained for and how to prompt it (serve/).
void WriteAdapterTasks(const std::string& adapter_dir, const std::vector<DataSourceConfig>& sources) {
  json tasks = json::object();
  for (const DataSourceConfig& source : sources)
    if (!tasks.contains(source.task)) tasks[source.task] = source.PromptTemplate();
  fs::AtomicWriteString(adapter_dir + "/tasks.json", json{{"tasks", tasks}}.dump(2) + "\n");
}

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

}  // namespace

void TrainConfig::Load(config::Node root) {
  model.Load(root.Child("model"));
  auto d = root.Child("data");
  InterleaveOptions interleave;
  if (d.Has("interleave")) interleave.Load(d.Child("interleave"));
  data.train = LoadSources(d, "train", interleave);
  if (d.Has("valid")) data.valid = LoadSources(d, "valid", interleave);
  d.Read("max_missing_fraction", data.max_missing_fraction, InRange(0.0, 1.0))
      .Read("workers", data.workers, InRange(0, 64));
  if (data.train.empty()) d.Fail("train", "needs at least one source");
  auto t = root.Child("train");
  train.Load(t);
  t.Read("max_epochs", train.max_epochs, InRange<int64_t>(0, 1 << 30))
      .Read("batch_frames", train.batch_frames, InRange(0.0, 1e12))
      .Read("l2_to_start", train.l2_to_start, InRange(0.0, 1e9))
      .Read("trainable", train.trainable, config::Validator<std::vector<std::string>>([](const std::vector<std::string>& parts) {
        for (const std::string& p : parts)
          if (!std::set<std::string>{"speech_projector", "speech_encoder", "image_projector", "image_encoder",
                                     "unit_vocab", "lora"}
                   .count(p))
            return Str("'", p, "' is not one of speech_projector, speech_encoder, image_projector, image_encoder, "
                       "unit_vocab, lora");
        return std::string();
      }));
  if (train.precision != "float32" && model.dtype != "float32")
    t.Fail("precision", Str(train.precision, " autocast keeps float32 master weights; it needs model.dtype "
                                             "float32, not ", model.dtype));
  auto e = root.Child("eval");
  e.Read("every", eval.every, InRange<int64_t>(0, int64_t{1} << 40))
      .Read("max_examples", eval.max_examples, InRange<int64_t>(0, int64_t{1} << 40))
      .Read("batch_size", eval.batch_size, InRange<int64_t>(1, 1 << 16))
      .Read("max_new_tokens", eval.max_new_tokens, InRange<int64_t>(1, 1 << 16))
      .Read("ctc_weight", eval.ctc_weight, InRange(0.0, 100.0))
      .Read("ctc_candidates", eval.ctc_candidates, InRange<int64_t>(1, 1 << 16))
      .Read("asr_encoder", eval.asr_encoder)
      .Read("lora_discount", eval.lora_discount, InRange(0.0, 10.0));
  auto c = root.Child("checkpoint");
  c.Read("every", checkpoint.every, InRange<int64_t>(0, int64_t{1} << 40))
      .Read("keep", checkpoint.keep, InRange<int64_t>(1, 1 << 20));
  root.Read("output_dir", output_dir).Read("init_adapters", init_adapters).Read("seed", seed).Read("threads", threads, InRange(0, 1024));
  for (auto* sources : {&data.train, &data.valid})
    for (DataSourceConfig& source : *sources)
      if (source.interleave.seed == 0) source.interleave.seed = seed;  // spans and streams follow the run's seed
}

json TrainResult::ToJson() const {
  return {{"output_dir", output_dir},
          {"steps", steps},
          {"epochs_started", epochs_started},
          {"seconds", seconds},
          {"examples_per_second", examples_per_second},
          {"tokens_per_second", tokens_per_second},
          {"final_loss", final_loss},
          {"trainable_parameters", trainable_parameters},
          {"resumed", resumed},
          {"resumed_from_step", resumed_from_step},
          {"eval", eval},
          {"data", data}};
}

std::vector<torch::Tensor> SelectTrainable(const adapters::MultimodalLMImpl& model, const std::vector<std::string>& parts) {
  if (parts.empty()) return model.TrainableParameters();
  // Each trainable parameter's part, from its module path: speech_projector.*, speech_encoder.*,
  // image_projector.*, image_encoder.*, backbone.*extra_vocab* (unit rows), other backbone.* (LoRA).
  std::map<const void*, std::string> part_of;
  for (const auto& item : model.named_parameters(true)) {
    const std::string& name = item.key();
    std::string part = name.substr(0, name.find('.'));
    if (part == "backbone") part = name.find("extra_vocab") != std::string::npos ? "unit_vocab" : "lora";
    part_of[item.value().unsafeGetTensorImpl()] = part;
  }
  std::map<std::string, std::vector<torch::Tensor>> available;
  for (const torch::Tensor& p : model.TrainableParameters()) available[part_of.at(p.unsafeGetTensorImpl())].push_back(p);
  std::vector<torch::Tensor> out;
  for (const std::string& part : parts) {
    if (!available.count(part)) {
      std::string have;
      for (const auto& [name, unused] : available) have += (have.empty() ? "" : ", ") + name;
      throw Error(Str("train.trainable: the model has no ", part, " to train (it has: ", have, ")"));
    }
    for (const torch::Tensor& p : available[part]) out.push_back(p);
  }
  return out;
}

AutocastGuard PrecisionScope(const TrainConfig& config) {
  return Precision(config.train.precision, config.model.device).Scope();
}

// Round-trip intelligibility of a tts source: each entry's text is synthesized (TtsPipeline with
// model.unit_decoder, greedy) and transcribed by eval.asr_encoder's CTC head, next to the same
// ASR on the entry's own recording (the reference): WER/CER of both, their ratio, the duration
// ratio and the real-time factor of synthesis. Entries with units are also resynthesized from those
// units (decoder + vocoder, no LM): the ceiling the unit path leaves the LM, which tells a weak
// adapter from a weak decoder.
json EvaluateTts(adapters::MultimodalLMImpl& model, const Dataset& valid, const std::vector<int64_t>& items,
                 const TrainConfig::Eval& eval, const std::string& tts_prompt) {
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

json Evaluate(adapters::MultimodalLMImpl& model, const Dataset& valid, const TrainConfig::Eval& eval,
              FeatureCache& cache) {
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
    EditCounts words, chars, lm_words, lm_chars, ctc_words, ctc_chars;
    const bool guided = source.task == "asr" && eval.ctc_weight > 0;
    double ranking_speech = -1, ranking_text = -1;
    int64_t exact = 0, attributes_right = 0, attributes_total = 0;
    std::array<int64_t, kCaptionAttributeNames.size()> slot_right{};  // which attribute goes wrong
    double nll = 0;
    int64_t tokens = 0;
    json samples = json::array();
    for (size_t start = 0; start < items.size(); start += eval.batch_size) {
      const std::vector<int64_t> batch(items.begin() + start,
                                       items.begin() + std::min(items.size(), start + eval.batch_size));
      const auto examples = valid.Materialize(batch, model, cache);
      const adapters::MultimodalBatch teacher = model.Prepare(examples, text::PaddingSide::kRight);
      nll += model.Loss(teacher).item<double>() * teacher.target_tokens;
      tokens += teacher.target_tokens;
      if (source.task == "tts" || source.task == "interleaved") continue;  // scored below instead
      text::GenerationOptions options;
      options.max_new_tokens = eval.max_new_tokens;
      const text::GenerationResult generated =
          model.Generate(examples, options, nullptr, {guided ? eval.ctc_weight : 0.0, eval.ctc_candidates});
      if (guided) {
        const text::GenerationResult alone = model.Generate(examples, options);
        const std::vector<std::string> heard = model.CtcTranscripts(examples);
        for (size_t row = 0; row < batch.size(); ++row) {
          const std::string lm = model.Tokenizer().Decode(alone.tokens[row], true);
          lm_words += WordErrors(examples[row].target, lm);
          lm_chars += CharErrors(examples[row].target, lm);
          ctc_words += WordErrors(examples[row].target, heard[row]);
          ctc_chars += CharErrors(examples[row].target, heard[row]);
        }
      }
      for (size_t row = 0; row < batch.size(); ++row) {
        const std::string reference = examples[row].target;
        const std::string hypothesis = model.Tokenizer().Decode(generated.tokens[row], true);
        words += WordErrors(reference, hypothesis);
        chars += CharErrors(reference, hypothesis);
        if (NormalizeForScoring(reference) == NormalizeForScoring(hypothesis)) ++exact;
        if (source.task == "caption") {
          const auto want = CaptionAttributes(reference), got = CaptionAttributes(hypothesis);
          attributes_total += 5;
          for (size_t k = 0; k < want.size() && k < got.size(); ++k) {
            attributes_right += want[k] == got[k];
            slot_right[k] += want[k] == got[k];
          }
        }
        if (samples.size() < 5) samples.push_back({{"reference", reference}, {"hypothesis", hypothesis}});
      }
    }
    if (source.task == "sqa" && items.size() >= 4) {
      const auto [speech_accuracy, text_accuracy] = RankAnswers(model, valid, items, cache);
      ranking_speech = speech_accuracy;
      ranking_text = text_accuracy;
    }
    json r = {{"task", source.task}, {"examples", items.size()}, {"loss", tokens ? nll / tokens : 0.0},
              {"exact_match", items.empty() ? 0.0 : double(exact) / items.size()}, {"samples", samples}};
    if (source.task == "asr") {
      r["wer"] = words.Rate();
      r["cer"] = chars.Rate();
      if (guided) {
        r["ctc_weight"] = eval.ctc_weight;
        r["lm_only_wer"] = lm_words.Rate();
        r["lm_only_cer"] = lm_chars.Rate();
        r["ctc_greedy_wer"] = ctc_words.Rate();
        r["ctc_greedy_cer"] = ctc_chars.Rate();
      }
    }
    if (source.task == "caption") {
      r["attribute_accuracy"] = attributes_total ? double(attributes_right) / attributes_total : 0.0;
      json by_slot = json::object();
      for (size_t k = 0; k < kCaptionAttributeNames.size(); ++k)
        by_slot[kCaptionAttributeNames[k]] = items.empty() ? 0.0 : double(slot_right[k]) / double(items.size());
      r["attribute_accuracy_by_slot"] = by_slot;
    }
    if (source.task == "tts") {
      // The round trip needs a unit decoder and an ASR; without them the unit NLL alone scores.
      const std::string missing = model.Config().unit_decoder.empty() ? "no model.unit_decoder"
                                  : eval.asr_encoder.empty()         ? "no eval.asr_encoder"
                                                                     : "";
      json t = missing.empty() ? EvaluateTts(model, valid, items, eval, source.PromptTemplate())
                               : json{{"task", "tts"}, {"examples", items.size()}, {"round_trip", "skipped: " + missing}};
      t["loss"] = r["loss"];
      r = t;
    }
    if (source.task == "text") r["perplexity"] = tokens ? std::exp(nll / tokens) : 0.0;
    if (source.task == "interleaved") {
      json t = EvaluateInterleaved(model, valid, items, source.interleave, eval.batch_size, cache);
      t["task"] = "interleaved";
      t["examples"] = items.size();
      t["loss"] = r["loss"];
      r = t;
    }
    if (ranking_speech >= 0) {
      r["ranking_accuracy"] = ranking_speech;
      r["text_ranking_accuracy"] = ranking_text;
      r["ranking_chance"] = 0.25;
    }
    out[source.manifest + " (" + source.task + ")"] = r;
    loss_sum += tokens ? nll / tokens : 0.0;
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

json EvaluateValid(const TrainConfig& config, adapters::MultimodalLMImpl& model) {
  Check(!config.data.valid.empty(), "no data.valid source to evaluate on");
  PrepareSources(config.data.valid, config.threads, false);
  const Dataset valid(config.data.valid, config.data.max_missing_fraction, model.MaxSpeechSeconds(), "data.valid",
                      true, &model);
  FeatureCache cache;
  const AutocastGuard precision = PrecisionScope(config);
  return Evaluate(model, valid, config.eval, cache);
}

TrainResult Train(const TrainConfig& c, const std::string& effective_config_yaml, bool resume, bool quiet) {
  Distributed dist = Distributed::FromEnvironment(c.model.device);
  const bool main_rank = dist.IsMain();
  quiet = quiet || !main_rank;
  const std::string previous_latest = resume ? LatestCheckpoint(c.output_dir) : "";
  Check(!resume || !previous_latest.empty(), "--resume: '", c.output_dir, "' has no checkpoint to resume from");
  if (!resume)
    Check(LatestCheckpoint(c.output_dir).empty(), "'", c.output_dir,
          "' already holds a run with checkpoints; pass --resume to continue it or choose another output_dir");
  dist.Barrier();  // every rank checked the run directory before rank 0 writes into it
  JobOptions job_options{c.output_dir, effective_config_yaml, c.seed, c.threads};
  job_options.append_metrics = resume;
  job_options.writer = main_rank;
  const Job job(job_options);
  const Precision precision(c.train.precision, c.model.device);

  adapters::MultimodalConfig model_config = c.model;
  model_config.device = dist.Device(c.model.device);  // each NCCL rank on its own GPU
  adapters::MultimodalLM model(model_config);
  if (!c.init_adapters.empty() && !resume) {
    Check(stdfs::is_directory(c.init_adapters), "init_adapters: '", c.init_adapters, "' is not a directory");
    model->LoadAdapters(c.init_adapters);
    log::Info(Str("starting from the adapters in ", c.init_adapters));
  }
  if (c.eval.ctc_weight > 0 && std::any_of(c.data.valid.begin(), c.data.valid.end(),
                                           [](const DataSourceConfig& s) { return s.task == "asr"; }))
    model->RequireCtcHead("eval.ctc_weight");  // before training, not at the first evaluation
  const double max_seconds = model->MaxSpeechSeconds();
  PrepareSources(c.data.train, c.threads, !quiet);
  PrepareSources(c.data.valid, c.threads, !quiet);
  const Dataset train(c.data.train, c.data.max_missing_fraction, max_seconds, "data.train", quiet, model.get());
  std::unique_ptr<Dataset> valid;
  if (!c.data.valid.empty())
    valid = std::make_unique<Dataset>(c.data.valid, c.data.max_missing_fraction, max_seconds, "data.valid", quiet,
                                      model.get());
  const bool interleaved = std::any_of(c.data.train.begin(), c.data.train.end(),
                                       [](const DataSourceConfig& s) { return s.task == "interleaved"; });
  // What each epoch's interleaving makes of the data (streams, spans, switches, tokens per modality).
  auto log_interleave = [&](int64_t epoch) {
    if (interleaved) job.Log({{"epoch", epoch}, {"interleave", train.InterleaveStats(*model, epoch).ToJson()}});
  };
  train.CheckSpeechUnits(model->SpeechUnits(), model->SpeechUnitsHash());
  if (valid) valid->CheckSpeechUnits(model->SpeechUnits(), model->SpeechUnitsHash());
  // The tts round trip loads the decoder only at the first evaluation: a wrong path is found now,
  // not after the training it was meant to measure.
  if (!c.model.unit_decoder.empty() && std::any_of(c.data.valid.begin(), c.data.valid.end(),
                                                   [](const DataSourceConfig& s) { return s.task == "tts"; }))
    audio::UnitDecoderConfig::Read(c.model.unit_decoder, model->SpeechUnitsHash(), "model.unit_decoder");
  FeatureCache cache;
  // Declared after the cache and the model it reads, so it is destroyed (and its workers joined) first.
  Prefetcher prefetch(train, *model, cache, c.data.workers);

  model->train();
  const std::vector<torch::Tensor> parameters = SelectTrainable(*model, c.train.trainable);
  if (!c.train.trainable.empty()) {  // the parts left out get no gradients at all
    for (const torch::Tensor& p : model->TrainableParameters()) p.set_requires_grad(false);
    for (const torch::Tensor& p : parameters) p.set_requires_grad(true);
  }
  const auto optimizer = MakeAdamW(parameters, c.train);
  TrainResult result;
  result.output_dir = c.output_dir;
  result.data = json::array();
  {
    int64_t epoch_items = 0;
    for (size_t s = 0; s < train.Stats().size(); ++s) epoch_items += train.ItemsPerEpoch(s);
    for (size_t s = 0; s < train.Stats().size(); ++s) {
      const SourceStats& st = train.Stats()[s];
      const int64_t items = train.ItemsPerEpoch(s);
      result.data.push_back({{"manifest", st.manifest}, {"task", c.data.train[s].task}, {"entries", st.entries},
                             {"used", st.used}, {"selected", st.selected}, {"epoch_items", items},
                             {"share", epoch_items ? double(items) / epoch_items : 0.0}});
    }
  }
  for (const auto& p : parameters) result.trainable_parameters += p.numel();
  // L2 towards the weights this run started from (saved once, so a resumed run uses the same).
  std::vector<torch::Tensor> start_weights;
  if (c.train.l2_to_start > 0) {
    const std::string path = c.output_dir + "/start_weights.safetensors";
    if (resume) {
      Check(stdfs::exists(path), "--resume with train.l2_to_start: '", path, "' is missing");
      safetensors::Reader reader(path);
      for (size_t i = 0; i < parameters.size(); ++i) {
        const torch::Tensor t = reader.Get(Str("p", i));
        Check(t.sizes() == parameters[i].sizes(), path, ": p", i, " has shape ", t.sizes(), ", the parameter ",
              parameters[i].sizes());
        start_weights.push_back(t.to(parameters[i].device(), parameters[i].scalar_type()));
      }
    } else {
      std::vector<std::pair<std::string, torch::Tensor>> named;
      for (size_t i = 0; i < parameters.size(); ++i) {
        start_weights.push_back(parameters[i].detach().clone());
        named.emplace_back(Str("p", i), start_weights.back());
      }
      if (main_rank) safetensors::Save(path, named);
    }
  }
  TrainingState state;
  if (resume) {
    state = LoadCheckpoint(previous_latest, *model, optimizer.get());
    result.resumed = true;
    result.resumed_from_step = state.step;
    log::Info(Str("resuming ", c.output_dir, " from ", previous_latest, " (step ", state.step, ")"));
  }
  log::Info(Str("training ", result.trainable_parameters, " parameters on ", train.Size(),
                " examples (", c.train.steps, " steps of ", c.train.batch_size, " x ", c.train.grad_accum, ")"));

  std::vector<std::vector<int64_t>> epoch = train.EpochBatches(c.seed, state.epoch, c.train.batch_size, c.train.batch_frames);
  result.epochs_started = state.epoch + 1;
  if (!resume) log_interleave(state.epoch);
  std::vector<std::string> ids;  // the current step's examples, for a non-finite loss
  double l2_penalty = 0;
  LoopHooks hooks;
  hooks.next = [&](TrainingState& s, int64_t micro) -> std::optional<MicroBatch> {
    if (micro == 0) ids.clear();
    if (s.cursor >= static_cast<int64_t>(epoch.size())) {
      ++s.epoch;
      s.cursor = 0;
      if (c.train.max_epochs > 0 && s.epoch >= c.train.max_epochs) return std::nullopt;
      epoch = train.EpochBatches(c.seed, s.epoch, c.train.batch_size, c.train.batch_frames);
      result.epochs_started = s.epoch + 1;
      log_interleave(s.epoch);
    }
    // Every rank sees the same global batch and takes every World()-th example of it.
    auto share = [&](const std::vector<int64_t>& global) {
      std::vector<int64_t> mine;
      for (size_t i = dist.Rank(); i < global.size(); i += dist.World()) mine.push_back(global[i]);
      return mine;
    };
    const int64_t position = s.cursor++;
    const std::vector<int64_t>& global = epoch[position];
    const std::vector<int64_t> indices = share(global);
    const int64_t key = (s.epoch << 32) + position;
    std::vector<adapters::MultimodalExample> examples;
    if (!indices.empty()) examples = prefetch.Get(key, indices);
    for (int64_t k = 1; k <= c.data.workers && position + k < static_cast<int64_t>(epoch.size()); ++k)
      prefetch.Ahead(key + k, share(epoch[position + k]));
    for (int64_t i : global) ids.push_back(train.Item(i).id);
    MicroBatch micro_batch;
    micro_batch.examples = static_cast<int64_t>(global.size());
    if (!indices.empty()) {
      const AutocastGuard scope = precision.Scope();
      const adapters::MultimodalBatch batch = model->Prepare(examples, text::PaddingSide::kRight);
      micro_batch.loss = model->Loss(batch);
      micro_batch.tokens = batch.target_tokens;
    }
    return micro_batch;
  };
  if (!start_weights.empty())
    hooks.penalty = [&] {
      torch::Tensor penalty = torch::zeros({}, parameters[0].options().dtype(torch::kFloat));
      for (size_t i = 0; i < parameters.size(); ++i)
        penalty = penalty + (parameters[i].to(torch::kFloat) - start_weights[i].to(torch::kFloat)).pow(2).sum();
      penalty = penalty * c.train.l2_to_start;
      l2_penalty = penalty.item<double>();
      return penalty;
    };
  hooks.log_fields = [&](const TrainingState& s, double) {
    return json{{"epoch", s.epoch}, {"l2_penalty", l2_penalty}};
  };
  if (valid)
    hooks.evaluate = [&](const TrainingState&) {
      json record;
      if (main_rank) {
        const AutocastGuard scope = precision.Scope();
        record = {{"eval", Evaluate(*model, *valid, c.eval, cache)}};
      }
      dist.Barrier();
      return record;
    };
  hooks.checkpoint = [&](const TrainingState& s) {
    if (main_rank) SaveCheckpoint(c.output_dir, s, *model, *optimizer, c.checkpoint.keep);
    dist.Barrier();
  };
  hooks.describe_failure = [&](const TrainingState&) {
    std::string listed;
    for (size_t i = 0; i < ids.size() && i < 8; ++i) listed += (i ? ", " : "") + ids[i];
    const std::string latest = LatestCheckpoint(c.output_dir);
    return Str(", batch of examples ", listed, ids.size() > 8 ? ", ..." : "", "; the last good checkpoint is ",
               latest.empty() ? std::string("none") : latest);
  };
  LoopSettings settings{"train", "loss", c.eval.every, c.checkpoint.every};
  settings.divergence_hint = "lower train.lr or check these examples";
  settings.quiet = quiet;
  TrainingLoop loop(c.train, settings, parameters, *optimizer, std::move(hooks), &dist);
  const LoopResult run = loop.Run(state, &job);
  result.steps = state.step;
  result.final_loss = run.final_loss;
  result.examples_per_second = run.examples / std::max(1e-9, run.seconds);
  result.tokens_per_second = run.tokens / std::max(1e-9, run.seconds);
  if (main_rank) {
    SaveCheckpoint(c.output_dir, state, *model, *optimizer, c.checkpoint.keep);
    model->SaveAdapters(c.output_dir + "/adapters");
    WriteAdapterTasks(c.output_dir + "/adapters", c.data.train);
    if (valid) {
      const AutocastGuard scope = precision.Scope();
      result.eval = Evaluate(*model, *valid, c.eval, cache);
    }
  }
  result.seconds = job.Seconds();
  job.Finish(result.ToJson());
  dist.Barrier();
  return result;
}

}  // namespace slm::train
