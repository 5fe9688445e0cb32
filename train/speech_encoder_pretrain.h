// `slm audio pretrain-encoder`: the embedded default speech encoder. Trains a small Whisper-shaped
// encoder (audio/whisper_encoder.h) from scratch with a character CTC head (audio/ctc.h) on the
// espeak-ng corpus, so that its features carry phonetic content before any adapter sees them.
//
// Data: the WordNet sentences (`slm data corpus`; built when missing and data.build_if_missing)
// synthesized by espeak-ng (`slm data synth`'s SynthesizeCorpus) into data.speech_dir/{train,
// valid,test}/ when those manifests are missing. The splits come from disjoint synsets, so valid
// and test sentences are unseen text. Utterances longer than data.max_seconds are skipped.
// Features: log-mel with the `features` options (default fixed_floor normalisation, so the same
// encoder streams: audio/log_mel.h), computed once and kept in memory.
//
// Training: batches of similar length (length-bucketed, shuffled per epoch with the seed),
// SpecAugment-style masks (train.freq_masks x freq_mask_width bins, train.time_masks x
// time_mask_width frames), optional corruptions (train.blur_prob, train.noise_std: a smoothed or
// noisy log-mel, so the encoder still hears synthesized speech; CorruptFeatures), AdamW, warm-up + cosine, gradient clipping (core/optim.h), float32.
// With model.attention_chunk_frames (and attention_left_chunks) the encoder trains and is evaluated
// with that block-causal mask, which config.json records, so audio/whisper_stream.h can stream it.
// Evaluation: greedy CTC character error rate (train/metrics.h CharErrors, over the CTC alphabet's
// normalised text) on valid every eval.every steps and on valid and test at the end.
//
// Output (output_dir): config.json + model.safetensors (HF Whisper encoder names, plus
// "ctc_head.weight"/"ctc_head.bias"), preprocessor_config.json (the feature options), config.yaml
// (effective), metrics.jsonl, result.json, samples.txt (reference vs hypothesis of test
// utterances). LoadWhisperEncoder(output_dir) loads the encoder. Deterministic for a fixed seed and
// thread count on the CPU. Not thread-safe (one run per process).
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "audio/log_mel.h"
#include "audio/whisper_encoder.h"
#include "core/config.h"
#include "train/runner.h"

namespace slm::train {

struct SpeechEncoderPretrainConfig : JobConfig {  // seed, threads, device, output_dir
  struct Data {
    std::string corpus_dir = "data/wordnet";
    std::string wordnet_dir = "/usr/share/wordnet";
    bool build_if_missing = true;
    std::string speech_dir = "data/speech_encoder";
    int64_t train_utterances = 4000;
    int64_t valid_utterances = 200;
    int64_t test_utterances = 200;
    double max_seconds = 8.0;
    std::vector<std::string> voices;          // empty = every English espeak-ng voice; "+f5" = a variant
    std::vector<std::string> exclude_voices;  // held out of all three splits (unseen-speaker tests)
    // Closed-vocabulary domain (datagen/data_prep.h SpeechSynthesis), for every split: sentences of at
    // most max_words words among the vocabulary_size most frequent words of the train sentences.
    int64_t vocabulary_size = 0;
    int64_t max_words = 0;
    // More training speech: manifests with "audio" and "text" (e.g. `slm data synth` output of
    // spoken questions), added to the synthesized train split; held-out splits are unchanged.
    std::vector<std::string> extra_train_manifests;
  } data;
  // An encoder directory (this command's output) to continue from: its weights, CTC head, model
  // shape and feature options (`model` and `features` may then not be given). Empty = from scratch.
  std::string init_from;
  audio::LogMelOptions features;
  audio::WhisperEncoderConfig model;
  struct Train : LoopOptions {  // steps, schedule, AdamW, clipping, grad_accum, precision (train/runner.h) plus:
    int64_t freq_masks = 2;
    int64_t freq_mask_width = 10;
    int64_t time_masks = 2;
    int64_t time_mask_width = 20;
    double blur_prob = 0;  // per row: smooth over time / over mel bins with this probability each
    double noise_std = 0;  // per row: Gaussian noise, sigma ~ U(0, noise_std), in log-mel units
    // per row: drop 0..lead_crop_frames leading log-mel frames (at most a quarter of the row), so
    // that speech starting without a silent lead-in is heard too. 0 = off.
    int64_t lead_crop_frames = 0;
    Train() {
      steps = 2200;
      batch_size = 16;
      lr = 2e-3;
      warmup_steps = 300;
      min_lr_ratio = 0.05;
      weight_decay = 0.01;
      beta2 = 0.98;
    }
  } train;
  struct Eval {
    int64_t every = 500;
    int64_t batch_size = 32;
  } eval;
  // On a CUDA `device` features are still computed and batched on the CPU; each batch is copied
  // over. Results on CUDA are not bitwise reproducible (its CTC and attention kernels are not
  // deterministic); the saved model is the same format.

  SpeechEncoderPretrainConfig();  // the tiny defaults of samples/configs/speech_encoder_tiny.yaml
  void Load(config::Node node);
};

struct SpeechEncoderPretrainResult : JobResult {  // model_dir, parameters, seconds, the loop (train/runner.h)
  int64_t train_utterances = 0;
  double train_audio_seconds = 0;
  double audio_seconds_per_second = 0;  // training throughput (seconds of audio per wall second)
  double valid_cer = 0;
  double test_cer = 0;
  double test_wer = 0;
  int64_t test_utterances = 0;
  nlohmann::json ToJson() const;
};

SpeechEncoderPretrainResult PretrainSpeechEncoder(const SpeechEncoderPretrainConfig& config,
                                                  const std::string& effective_config_yaml,
                                                  bool quiet = false);

}  // namespace slm::train
