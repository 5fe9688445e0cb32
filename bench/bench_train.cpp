// slm bench train: adapter-training throughput of the C++ trainer's step (MultimodalLM forward with
// the frozen encoder under no-grad, loss on target tokens, backward through the frozen backbone,
// AdamW on the trainable parameters) against a Python PyTorch eager loop of the same model, batch,
// dtype and precision, measured in the same run (bench/train_torch.py, the project virtualenv's
// torch, the same version as our LibTorch; transformers' LlamaForCausalLM and WhisperEncoder
// loaded from the same directories). Both sides get pre-computed features (random log-mel), so
// the step is what is timed, not data loading.
//
// Presets: tiny = the embedded starter backbone + tiny speech encoder + stack_mlp (as
// samples/configs/asr_tiny.yaml); tinyllama = a TinyLlama-1.1B-shaped backbone and a
// whisper-base-shaped encoder with random weights (written to a temporary directory that both sides
// load) and an MLP adapter, the shape the GPU utilisation goal names.
//
// On a CPU whose MKL runs AVX-512 only because slm answers MKL's vendor check (core/mkl_dispatch.h,
// "forced"), the baseline runs twice: as installed (stock PyTorch on this machine) and with
// libslm_mkl_preload.so preloaded, i.e. on the same MKL kernels as ours, so that the two effects
// (kernel choice, everything else) are reported apart.
//
// Reported per side: examples/s, step time, peak memory (CPU: peak RSS of the process; CUDA: peak
// allocated bytes), and the model FLOP utilisation against --peak-tflops when given: model FLOPs
// per step = 2 x encoder params x encoder frames (forward only, frozen) + 4 x frozen backbone
// params x LM positions (forward + activation gradients) + 6 x trainable params x their positions,
// plus attention's 2 x 2 x layers x T^2 x hidden (forward) and twice that backward.
#include <ATen/DeviceAccelerator.h>
#include <sys/resource.h>
#include <torch/torch.h>

#include <cstdio>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "adapters/multimodal.h"
#include "bench/bench_models.h"
#include "bench/bench_util.h"
#include "bench/step_profile.h"
#include "cli/command.h"
#include "core/autocast.h"
#include "core/device.h"
#include "core/error.h"
#include "core/json_report.h"
#include "core/optim.h"
#include "core/strings.h"
#include "train/runner.h"

namespace slm::bench {
namespace {

namespace stdfs = std::filesystem;

struct TrainBenchOptions {
  std::string preset = "tiny";  // tiny | tinyllama
  int64_t batch_size = 16;
  double seconds = 4.0;  // speech per example
  int steps = 10;        // timed steps (after 2 warm-up steps)
  bool lora = false;
  std::string device = "cpu";
  std::string dtype = "float32";      // parameter dtype
  std::string precision = "float32";  // autocast dtype (float32 = off)
  double peak_tflops = 0;             // dense peak of the device in this precision; 0 = no MFU
  std::string python = ".venv/bin/python";
  std::string script = "bench/train_torch.py";
  std::string work_dir;  // where tinyllama's random weights go; default a temporary directory
  int profile_steps = 0;  // > 0: also profile this many steps (bench/step_profile.h)
  std::string trace;      // with profile_steps: the Chrome trace goes here
  bool full_last_layer = false;  // the LM's last layer at every position (the step before pruning)
  std::string baseline_mkl = "both";  // stock | same | both (bench_util.h PythonBaselines)
  std::string mkl_preload;
};

// The sentence every example transcribes (its token count is reported).
constexpr const char* kTarget = "a general concept formed by extracting common features from specific examples";

adapters::MultimodalConfig ModelFor(const TrainBenchOptions& o, const std::string& work_dir) {
  adapters::MultimodalConfig c;
  c.device = o.device;
  c.dtype = o.dtype;
  if (o.preset == "tiny") {
    c.backbone = "samples/models/backbone_tiny";
    c.speech.encoder = "samples/models/speech_encoder_tiny";
    c.speech.projector.type = "stack_mlp";
    c.speech.projector.stack = 4;
    c.speech.projector.hidden_dim = 1024;
    Check(stdfs::exists(c.backbone) && stdfs::exists(c.speech.encoder),
          "--preset tiny runs from the repository root (samples/models/ not found)");
  } else {
    Check(o.preset == "tinyllama", "--preset must be tiny or tinyllama, got '", o.preset, "'");
    const TinyLlamaShapes shapes = WriteTinyLlamaShapes(work_dir);
    c.backbone = shapes.backbone;
    c.speech.encoder = shapes.encoder;
    c.speech.projector.type = "mlp";
    c.speech.projector.hidden_dim = 0;
  }
  c.lora_enabled = o.lora;
  c.lora.rank = 16;
  c.lora.alpha = 32;
  c.lora.target_modules = {"q_proj", "v_proj"};
  return c;
}

double PeakBytes(const torch::Device& device) {
  if (device.is_cuda()) {
    const auto stats = at::accelerator::getDeviceStats(device.index() < 0 ? 0 : device.index());
    return static_cast<double>(stats.allocated_bytes[0].peak);
  }
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_maxrss * 1024.0;
}

void RunTrainBench(const TrainBenchOptions& o, bool json) {
  Report report(json);
  Check(o.batch_size > 0 && o.seconds > 0 && o.seconds <= 30 && o.steps > 0,
        "--batch-size, --seconds (<= 30) and --steps must be positive");
  const std::vector<PythonBaseline> baselines = PythonBaselines(o.baseline_mkl, !ParseDevice(o.device).is_cuda(),
                                                                o.mkl_preload);
  std::optional<ScratchDir> scratch;  // tinyllama's random weights, unless --work-dir keeps them
  if (o.preset == "tinyllama" && o.work_dir.empty()) scratch.emplace("slm-bench-train-");
  const std::string work_dir = scratch ? scratch->path() : o.work_dir;
  const adapters::MultimodalConfig config = ModelFor(o, work_dir);
  const torch::Device device = ParseDevice(o.device);
  torch::manual_seed(0);
  adapters::MultimodalLM model(config);
  model->train();
  const std::vector<torch::Tensor> parameters = model->TrainableParameters();
  // The step is the trainer's (train/runner.h TrainingLoop::Step) with what the Python loop does:
  // a constant learning rate and no clipping.
  train::LoopOptions optim;
  optim.lr = 1e-4;
  optim.warmup_steps = 0;
  optim.min_lr_ratio = 1.0;
  optim.grad_clip = 0;
  optim.log_every = 1 << 30;
  optim.precision = o.precision;
  const auto optimizer = MakeAdamW(parameters, optim);

  const int64_t frames = static_cast<int64_t>(o.seconds * 100.0);
  const int64_t mels = model->SpeechEncoder()->Config().num_mel_bins;
  std::vector<adapters::MultimodalExample> examples;
  for (int64_t i = 0; i < o.batch_size; ++i)
    examples.push_back({"<speech> Transcribe:", {torch::randn({frames, mels})}, {}, kTarget});
  const train::Precision precision(o.precision, o.device);
  adapters::MultimodalBatch batch;
  train::LoopHooks hooks;
  hooks.next = [&](train::TrainingState&, int64_t) -> std::optional<train::MicroBatch> {
    const AutocastGuard scope = precision.Scope();
    batch = model->Prepare(examples, text::PaddingSide::kRight);
    return train::MicroBatch{model->Loss(batch, !o.full_last_layer), o.batch_size, batch.target_tokens};
  };
  train::LoopSettings settings{"bench train"};
  settings.quiet = true;
  train::TrainingLoop loop(optim, settings, parameters, *optimizer, std::move(hooks));
  train::TrainingState state;
  auto step = [&] {
    loop.Step(state);
    Sync(device);
    return batch;
  };
  if (device.is_cuda()) at::accelerator::resetPeakStats(device.index() < 0 ? 0 : device.index());
  const adapters::MultimodalBatch shape = step();
  step();
  const double start = NowSeconds();
  for (int i = 0; i < o.steps; ++i) step();
  const double seconds_per_step = (NowSeconds() - start) / o.steps;
  const double peak = PeakBytes(device);

  // Shapes both sides use.
  const int64_t positions = shape.inputs_embeds.size(1);
  const int64_t target_tokens = shape.target_tokens / o.batch_size;
  const int64_t speech_positions = model->SpeechProjector()->OutputLength((frames + 1) / 2);
  const int64_t prompt_tokens = positions - target_tokens - speech_positions;
  const text::LlamaConfig& lm = model->Backbone()->Config();
  const double backbone_params = static_cast<double>(model->Backbone()->ParameterCount());
  double trainable = 0, encoder_params = 0;
  for (const auto& p : parameters) trainable += static_cast<double>(p.numel());
  encoder_params = static_cast<double>(model->SpeechEncoder()->ParameterCount());
  const auto& enc = model->SpeechEncoder()->Config();
  const double enc_frames = static_cast<double>((frames + 1) / 2);
  const double attention = 4.0 * lm.num_hidden_layers * positions * positions * lm.hidden_size;
  const double enc_attention = 4.0 * enc.encoder_layers * enc_frames * enc_frames * enc.d_model;
  const double flops_per_example = 2.0 * encoder_params * enc_frames + enc_attention +
                                    4.0 * backbone_params * positions + 3.0 * attention +
                                    6.0 * trainable * speech_positions;
  const double flops_per_step = flops_per_example * o.batch_size;

  report.Line(Str("adapter training step, preset ", o.preset, ", batch ", o.batch_size, " x ", o.seconds,
                  " s speech + ", target_tokens, " target tokens (", positions, " LM positions), ",
                  torch::get_num_threads(), " threads on ", device.str(), ", ", o.dtype, " weights, precision ",
                  o.precision));
  report.Set("preset", o.preset);
  report.Set("full_last_layer", o.full_last_layer);
  report.Set("device", device.str());
  report.Set("dtype", o.dtype);
  report.Set("precision", o.precision);
  report.Set("threads", torch::get_num_threads());
  report.Set("batch_size", o.batch_size);
  report.Set("lm_positions", positions);
  report.Set("target_tokens_per_example", target_tokens);
  report.Set("trainable_parameters", trainable);
  report.Set("frozen_parameters", backbone_params + encoder_params);
  report.Set("model_flops_per_step", flops_per_step);
  report.Set("slm.examples_per_second", o.batch_size / seconds_per_step);
  report.Set("slm.seconds_per_step", seconds_per_step);
  report.Set("slm.peak_memory_mib", peak / (1 << 20));
  if (o.peak_tflops > 0) report.Set("slm.mfu", flops_per_step / seconds_per_step / (o.peak_tflops * 1e12));
  if (o.profile_steps > 0) {
    const nlohmann::json profile = ProfileSteps(o.profile_steps, [&] { step(); }, device, 15, o.trace);
    report.Set("slm.profile", profile);
    report.Line(Str("profile: ", profile["wall_ms_per_step"].get<double>(), " ms per step, device busy ",
                    profile["device_busy_ms_per_step"].get<double>(), " ms (",
                    profile["device_events_per_step"].get<double>(), " device events, ",
                    profile["cpu_events_per_step"].get<double>(), " CPU events per step)"));
    for (const auto& k : profile["top"])
      report.Line(Str("  ", k["ms_per_step"].get<double>(), " ms x", k["calls_per_step"].get<double>(), "  ",
                      k["name"].get<std::string>()));
  }

  report.Set("mkl_dispatch", MklDispatchState().mode);
  const std::string args =
      Str("--backbone ", config.backbone, " --encoder ", config.speech.encoder, " --projector ",
          config.speech.projector.type, " --stack ", config.speech.projector.stack, " --hidden ",
          config.speech.projector.hidden_dim, " --lora ", o.lora ? 1 : 0, " --batch-size ", o.batch_size,
          " --frames ", frames, " --prompt-tokens ", prompt_tokens, " --target-tokens ", target_tokens,
          " --steps ", o.steps, " --device ", o.device, " --dtype ", o.dtype, " --precision ", o.precision,
          " --threads ", torch::get_num_threads());
  bool any = false;
  for (const PythonBaseline& baseline : baselines) {
    const std::string name = "pytorch_eager" + baseline.suffix;
    const nlohmann::json theirs = RunPythonJson(o.python, o.script, args, baseline.preload);
    if (theirs.empty()) continue;
    any = true;
    const double their_step = theirs["seconds_per_step"].get<double>();
    report.Set(name + ".examples_per_second", o.batch_size / their_step);
    report.Set(name + ".seconds_per_step", their_step);
    report.Set(name + ".peak_memory_mib", theirs["peak_bytes"].get<double>() / (1 << 20));
    report.Set(name + ".lm_positions", theirs["lm_positions"]);
    report.Set(name + ".torch_version", theirs["torch"]);
    if (o.peak_tflops > 0) report.Set(name + ".mfu", flops_per_step / their_step / (o.peak_tflops * 1e12));
    report.Set("speedup_vs_" + name, their_step / seconds_per_step);
  }
  report.Set("python_baseline", any);
  report.Emit();
}

cli::Registrar registrar([](CLI::App& app, cli::Common& common) {
  auto* cmd = cli::Group(app, "bench", "benchmarks, each against a baseline measured in the same run")
                  ->add_subcommand("train", "adapter training step vs a PyTorch eager loop of the same model");
  auto o = std::make_shared<TrainBenchOptions>();
  cmd->add_option("--preset", o->preset, "tiny (embedded models) | tinyllama (TinyLlama-1.1B + whisper-base shapes)")
      ->capture_default_str();
  cmd->add_option("--batch-size", o->batch_size, "examples per step")->capture_default_str();
  cmd->add_option("--seconds", o->seconds, "speech per example")->capture_default_str();
  cmd->add_option("--steps", o->steps, "timed steps (after 2 warm-up steps)")->capture_default_str();
  cmd->add_flag("--lora", o->lora, "LoRA r16 on q_proj/v_proj as well");
  cmd->add_option("--device", o->device, "cpu|cuda|cuda:N|auto")->capture_default_str();
  cmd->add_option("--dtype", o->dtype, "parameter dtype: float32|bfloat16")->capture_default_str();
  cmd->add_option("--precision", o->precision, "autocast: float32 (off)|bfloat16|float16")->capture_default_str();
  cmd->add_option("--peak-tflops", o->peak_tflops, "device dense peak for MFU (H100 SXM bf16: 989)");
  cmd->add_option("--python", o->python, "python with torch + transformers ('none' = skip the baseline)")
      ->capture_default_str();
  cmd->add_option("--script", o->script, "the baseline script")->capture_default_str();
  cmd->add_option("--profile-steps", o->profile_steps,
                  "after timing, profile this many steps (device busy time, top kernels)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--trace", o->trace, "with --profile-steps: write the Chrome trace here");
  cmd->add_flag("--full-last-layer", o->full_last_layer,
                "run the LM's last layer at every position, not only the targets' (to measure that saving)");
  AddBaselineMklOptions(cmd, &o->baseline_mkl, &o->mkl_preload);
  cmd->add_option("--work-dir", o->work_dir, "keep tinyllama's random weights here (reused when present)");
  cmd->callback([o, &common] { RunTrainBench(*o, common.json); });
});

}  // namespace
}  // namespace slm::bench
