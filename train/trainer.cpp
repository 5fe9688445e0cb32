#include "train/trainer.h"

#include <torch/torch.h>

#include <cmath>
#include <filesystem>

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
  CheckEvaluation(*model, c.data.valid, c.eval);  // before training, not at the first evaluation
  const double max_seconds = model->MaxSpeechSeconds();
  PrepareSources(c.data.train, c.threads, !quiet);
  PrepareSources(c.data.valid, c.threads, !quiet);
  const Dataset train(c.data.train, c.data.max_missing_fraction, max_seconds, "data.train", quiet, model.get());
  std::unique_ptr<Dataset> valid;
  if (!c.data.valid.empty())
    valid = std::make_unique<Dataset>(c.data.valid, c.data.max_missing_fraction, max_seconds, "data.valid", quiet,
                                      model.get());
  const bool interleaved = std::any_of(c.data.train.begin(), c.data.train.end(),
                                       [](const DataSourceConfig& s) { return GetTask(s.task).interleaves; });
  // What each epoch's interleaving makes of the data (streams, spans, switches, tokens per modality).
  auto log_interleave = [&](int64_t epoch) {
    if (interleaved) job.Log({{"epoch", epoch}, {"interleave", train.InterleaveStats(*model, epoch).ToJson()}});
  };
  train.CheckSpeechUnits(model->SpeechUnits(), model->SpeechUnitsHash());
  if (valid) valid->CheckSpeechUnits(model->SpeechUnits(), model->SpeechUnitsHash());
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
