// Evaluation of a MultimodalLM on valid sources, one report per source, each made by the source's
// task (train/tasks.h Task::evaluator): the trainer's eval.every records, its final eval, `slm eval`
// and the stages that only evaluate.
//
// Every source: mean target NLL (teacher forced, "loss"). Tasks whose target is text decode each
// example greedily and report exact match (train/metrics.h normalisation) and a few samples; then:
//   asr      WER and CER; with eval.ctc_weight > 0 decoding is CTC-guided and the LM-alone and the
//            encoder's own greedy CTC WER/CER are reported beside
//   caption  attribute accuracy on shapes captions (colour, shape, relation, colour, shape;
//            order-independent scene, train/metrics.h CaptionAttributes), also per slot
//   sqa      likelihood ranking of the right answer among 4 (it and three other answers of the
//            set) by mean NLL per token, next to the same ranking with the written question as
//            text through the backbone without LoRA ("what is a dog" -> "dog:", the pretraining
//            format: the frozen LM's upper bound) and chance
//   text     perplexity
//   vqa      nothing more
// tts: the round trip (synthesize with model.unit_decoder, transcribe with eval.asr_encoder), or
// "skipped" naming what is missing; interleaved: SIMS-style likelihood pairs over modalities.
// With eval.lora_discount != 1 every score is computed with the LoRA scaling discounted.
// Not thread-safe (it switches the model to eval mode and back, and may change its LoRA scale
// while it runs).
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "adapters/multimodal.h"
#include "train/dataset.h"

namespace slm::train {

struct EvalOptions {
  int64_t every = 0;  // steps between the trainer's evaluations; 0 = only at the end
  int64_t max_examples = 200;  // per valid source; 0 = all
  int64_t batch_size = 16;
  int64_t max_new_tokens = 48;
  // asr sources: CTC-guided decoding (adapters::CtcGuide) with this weight; 0 = the LM alone.
  // When on, the LM-alone WER/CER and the encoder's own greedy CTC WER/CER are reported beside.
  double ctc_weight = 0;
  int64_t ctc_candidates = 8;
  // tts sources: a speech encoder directory with a CTC head (the project's own ASR) that
  // transcribes the synthesized audio and the entry's recording (round-trip WER).
  std::string asr_encoder;
  // LoRA scaling discount: evaluation runs with W = W0 + lora_discount * (alpha / r) * B A
  // (forgetting mitigation: 1 = the trained adapter, 0 = the backbone without LoRA).
  double lora_discount = 1.0;
};

// What one source's evaluation sees. `nll` and `tokens` are the summed target NLL and the target
// token count of the source's examples, complete when Finish is called.
struct EvalSource {
  adapters::MultimodalLMImpl& model;
  const Dataset& valid;
  const DataSourceConfig& source;
  const std::vector<int64_t>& items;  // indices into `valid`, this source's, at most max_examples
  const EvalOptions& eval;
  FeatureCache& cache;
  double nll = 0;
  int64_t tokens = 0;
};

// How a task scores one valid source. One instance per source and evaluation; Evaluate calls, in
// order: Generates once, then per batch (when it generates) Generate and Score for each row, then
// Finish once.
class TaskEvaluator {
 public:
  virtual ~TaskEvaluator() = default;
  // Before training: slm::Error for what this evaluation will need and the model or options lack
  // (a CTC head, a unit decoder for other units), so that a run fails at its start, not at its first
  // evaluation.
  virtual void Check(adapters::MultimodalLMImpl& model, const EvalOptions& eval) const;
  // Whether each batch is decoded greedily and compared with its target (exact match, samples).
  virtual bool Generates() const { return true; }
  // The decoded hypothesis of each example of a batch (greedy, eval.max_new_tokens).
  virtual std::vector<std::string> Generate(EvalSource& s, const std::vector<adapters::MultimodalExample>& examples);
  // One generated row: the example's target and the decoded hypothesis.
  virtual void Score(const std::string& reference, const std::string& hypothesis);
  // The source's report: `r` arrives with task, examples, loss and (when it generates)
  // exact_match and samples; the task adds its metrics or replaces the report (loss kept).
  virtual void Finish(EvalSource& s, nlohmann::json& r) = 0;
};

// The evaluators of the tasks (train/tasks.cpp registers them).
std::unique_ptr<TaskEvaluator> MakeGenerationEvaluator();  // exact match and samples only (vqa)
std::unique_ptr<TaskEvaluator> MakeAsrEvaluator();
std::unique_ptr<TaskEvaluator> MakeSqaEvaluator();
std::unique_ptr<TaskEvaluator> MakeCaptionEvaluator();
std::unique_ptr<TaskEvaluator> MakeTextEvaluator();
std::unique_ptr<TaskEvaluator> MakeTtsEvaluator();
std::unique_ptr<TaskEvaluator> MakeInterleavedEvaluator();

// Each source's task evaluator's Check (see TaskEvaluator::Check).
void CheckEvaluation(adapters::MultimodalLMImpl& model, const std::vector<DataSourceConfig>& sources,
                     const EvalOptions& eval);

// Evaluates `model` on the sources of `valid`: {"<manifest> (<task>)": {...}} plus "loss", the mean
// over sources, and "lora_discount" when one applied. The model's mode and LoRA scale are restored.
nlohmann::json Evaluate(adapters::MultimodalLMImpl& model, const Dataset& valid, const EvalOptions& eval,
                        FeatureCache& cache);

}  // namespace slm::train
