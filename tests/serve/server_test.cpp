// The gRPC server end to end over loopback, in process, on the committed starter models
// (backbone_tiny, speech_encoder_tiny with its CTC head, the starter spoken-QA adapter). Streams are
// sent as fast as possible (no real-time pacing): these tests check behaviour, never speed. The
// server's guards (bad requests, limits, deadlines, auth, drain, TLS) are in server_guards_test.cpp.
#include "tests/serve/server_fixture.h"

#include "datagen/shapes.h"

namespace slm::serve {
namespace {

using namespace testing_server;
namespace v1 = slm::v1;
using grpc::StatusCode;

TEST_F(ServerTest, StreamAt16kHzGivesTheOfflineCtcTranscriptWithWordTimesInOrder) {
  Start();
  const std::vector<float> speech = Speech("what is a psychological feature");
  v1::ConverseRequest config = Config(v1::FLOAT32, 16000);
  config.mutable_config()->set_interim_results(true);
  // 160 ms chunks at 4x real time: the server has time for interims between them.
  const Call call = Send(Stream(config, Float32(speech), 2560 * 4), std::chrono::milliseconds(40));
  ASSERT_TRUE(call.status.ok()) << call.status.error_message();
  // Order: interims, then one final, then one summary; request_id everywhere.
  ASSERT_GE(call.responses.size(), 2u);
  EXPECT_GE(call.Count(v1::ConverseResponse::kInterimTranscript), 1);
  EXPECT_TRUE(call.responses.back().has_summary());
  EXPECT_TRUE(call.responses[call.responses.size() - 2].has_final_transcript());
  for (const auto& r : call.responses) {
    EXPECT_EQ(r.request_id(), "test-1");
    EXPECT_EQ(r.utterance_index(), 0);
  }
  const v1::FinalTranscript& final = *call.Finals().at(0);
  EXPECT_EQ(final.text(), OfflineCtcText(speech));
  EXPECT_EQ(final.end_reason(), v1::CLIENT_HALF_CLOSE);
  EXPECT_GT(final.confidence(), 0.f);
  EXPECT_LE(final.confidence(), 1.f);
  ASSERT_GE(final.words_size(), 3);
  const double duration = double(speech.size()) / 16000;
  double previous_end = 0;
  std::string joined;
  for (const v1::WordInfo& w : final.words()) {
    EXPECT_GE(w.start_seconds(), previous_end - 1e-9) << w.word();
    EXPECT_GT(w.end_seconds(), w.start_seconds()) << w.word();
    EXPECT_LE(w.end_seconds(), duration + 1e-6) << w.word();
    previous_end = w.end_seconds();
    joined += (joined.empty() ? "" : " ") + w.word();
  }
  EXPECT_EQ(joined, final.text());
  const v1::UtteranceSummary& summary = call.responses.back().summary();
  EXPECT_NEAR(summary.audio_seconds_processed(), duration, 0.011);
  EXPECT_GT(summary.first_interim_ms(), 0);
  EXPECT_EQ(summary.model(), "tiny");
}

TEST_F(ServerTest, Linear16At8kHzIsResampledAndTranscribedLikeTheOriginal) {
  Start();
  const std::vector<float> speech = Speech("a member of the genus canis");
  const std::vector<float> narrow = audio::Resample(speech, 16000, 8000);
  const Call call = Send(Stream(Config(v1::LINEAR16, 8000), Linear16(narrow), 2560));
  ASSERT_TRUE(call.status.ok()) << call.status.error_message();
  // Reference: the same telephone-band audio brought back to 16 kHz offline (whole-signal soxr
  // instead of the server's streaming soxr and int16 rounding). Wrong byte order or a wrong
  // rate would give unrelated characters (CER near 1).
  const std::string reference = OfflineCtcText(audio::Resample(narrow, 8000, 16000));
  const std::string got = call.Finals().at(0)->text();
  EXPECT_LT(double(EditDistance(got, reference)) / reference.size(), 0.1) << got << " vs " << reference;
}

TEST_F(ServerTest, RespondStreamsTheSameAnswerAsOfflineGreedyGeneration) {
  Start();
  const std::vector<float> speech = Speech("what is a dog");
  const Call call = Send(Stream(Config(v1::FLOAT32, 16000, v1::RESPOND), Float32(speech), 16000));
  ASSERT_TRUE(call.status.ok()) << call.status.error_message();
  ASSERT_GE(call.Count(v1::ConverseResponse::kAnswerToken), 1);
  const v1::UtteranceSummary& summary = call.responses.back().summary();
  EXPECT_EQ(summary.adapter(), "sqa");
  EXPECT_EQ(summary.tokens_generated(), call.Count(v1::ConverseResponse::kAnswerToken));
  EXPECT_NE(summary.finish_reason(), v1::FINISH_REASON_UNSPECIFIED);
  // Token indices count up from 0.
  int index = 0;
  for (const auto& r : call.responses)
    if (r.has_answer_token()) EXPECT_EQ(r.answer_token().index(), index++);

  // Reference: the adapter's own Generate (text::GenerateFromEmbeds, one batched cache) on the
  // same samples.
  adapters::MultimodalLM model = StarterSqaModel();
  adapters::MultimodalExample example;
  example.prompt = "<speech> Answer:";
  example.speech = {model->SpeechFeatures(speech)};
  text::GenerationOptions options;
  options.max_new_tokens = 16;
  const text::GenerationResult reference = model->Generate({example}, options);
  EXPECT_EQ(call.AnswerIds(), reference.tokens[0]);
  EXPECT_EQ(call.Answer(), model->Tokenizer().Decode(reference.tokens[0], true));
}

TEST_F(ServerTest, ContinuouslyBatchedGenerationMatchesEachPromptAlone) {
  ServeConfig config = TestConfig();
  config.max_streams = 8;
  config.max_answer_tokens_limit = 240;
  Start(config);
  // A long sampled generation runs throughout, so that every prompt below decodes in a batch of at
  // least two however fast the steps are (the prompts themselves often stop within a few tokens).
  grpc::ClientContext anchor_context;
  std::atomic<int> anchor_tokens{0};
  std::thread anchor([&] {
    v1::GenerateRequest request;
    request.set_prompt("a dog is");
    request.set_max_new_tokens(240);
    request.set_temperature(20.0);
    request.set_seed(3);
    auto reader = stub_->Generate(&anchor_context, request);
    v1::GenerateResponse response;
    while (reader->Read(&response)) anchor_tokens += response.has_token() ? 1 : 0;
    reader->Finish();
  });
  while (anchor_tokens == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  const std::vector<std::string> prompts = {"a dog is", "the act of", "a member of the genus", "water:",
                                            "a small domesticated animal kept as a pet or for catching mice"};
  std::vector<std::vector<int64_t>> got(prompts.size());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < prompts.size(); ++i) {
    threads.emplace_back([&, i] {
      // Staggered arrivals: later prompts join decode steps already running.
      std::this_thread::sleep_for(std::chrono::milliseconds(2 * i));
      grpc::ClientContext context;
      v1::GenerateRequest request;
      request.set_prompt(prompts[i]);
      request.set_max_new_tokens(24);
      auto reader = stub_->Generate(&context, request);
      v1::GenerateResponse response;
      while (reader->Read(&response))
        if (response.has_token()) got[i].push_back(response.token().token_id());
      const grpc::Status status = reader->Finish();
      EXPECT_TRUE(status.ok()) << prompts[i] << ": " << status.error_message();
    });
  }
  for (auto& t : threads) t.join();
  anchor_context.TryCancel();
  anchor.join();
  text::LlamaModel backbone = text::LoadLlama(kRoot + "/samples/models/backbone_tiny");
  backbone->Freeze();
  const text::Tokenizer tokenizer = text::Tokenizer::Load(kRoot + "/samples/models/backbone_tiny");
  text::GenerationOptions options;
  options.max_new_tokens = 24;
  options.stop_token_ids = tokenizer.EosIds();
  for (size_t i = 0; i < prompts.size(); ++i) {
    const auto alone = text::Generate(backbone, {tokenizer.Encode(prompts[i], true, false)}, options);
    EXPECT_EQ(got[i], alone.tokens[0]) << prompts[i];
  }
  const nlohmann::json stats = server_->GetEngine()->Stats();
  EXPECT_GT(stats["max_decode_batch"].get<int64_t>(), 1) << stats.dump();
}

TEST_F(ServerTest, GenerateHonoursStopStringsAndSeededSampling) {
  Start();
  auto run = [&](const v1::GenerateRequest& request, std::string* text) {
    grpc::ClientContext context;
    auto reader = stub_->Generate(&context, request);
    v1::GenerateResponse response;
    v1::GenerateSummary summary;
    text->clear();
    while (reader->Read(&response)) {
      if (response.has_token()) *text += response.token().text();
      if (response.has_summary()) summary = response.summary();
    }
    EXPECT_TRUE(reader->Finish().ok());
    return summary;
  };
  v1::GenerateRequest request;
  request.set_prompt("a dog is");
  request.set_max_new_tokens(32);
  std::string greedy;
  run(request, &greedy);
  ASSERT_GE(greedy.size(), 4u);
  // Stop at the second word of the greedy continuation: the text ends before it.
  const std::string stop = greedy.substr(greedy.find(' ', 1) == std::string::npos ? 1 : greedy.find(' ', 1), 3);
  request.add_stop(stop);
  std::string stopped;
  const v1::GenerateSummary summary = run(request, &stopped);
  EXPECT_EQ(summary.finish_reason(), v1::STOP_STRING);
  EXPECT_EQ(stopped, greedy.substr(0, greedy.find(stop)));
  request.clear_stop();
  request.set_temperature(1.0);
  request.set_top_k(50);
  request.set_seed(7);
  std::string a, b;
  run(request, &a);
  run(request, &b);
  EXPECT_EQ(a, b);
}

// A backbone whose embedding table is larger than its tokenizer (padded vocabularies are common):
// here the 4096 extra rows are 1.5x copies of the real ones, so without care greedy decoding would
// always pick an id the tokenizer cannot decode. Answers must use decodable ids only, and then equal
// the unpadded model's.
TEST_F(ServerTest, AnswersOnlyUseIdsTheTokenizerCanDecode) {
  testing::TempDir padded;
  const std::string from = kRoot + "/samples/models/backbone_tiny";
  for (const char* f : {"tokenizer.model", "tokenizer_config.json", "added_tokens.json", "generation_config.json"})
    std::filesystem::copy_file(from + "/" + f, padded.File(f));
  nlohmann::json config = fs::ReadJson(from + "/config.json");
  config["vocab_size"] = 8192;
  fs::AtomicWriteString(padded.File("config.json"), config.dump(2));
  safetensors::Reader weights(from + "/model.safetensors");
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  for (const std::string& name : weights.Names()) {
    torch::Tensor t = weights.Get(name);
    if (name == "model.embed_tokens.weight") t = torch::cat({t, t * 1.5}, 0);
    tensors.emplace_back(name, t);
  }
  safetensors::Save(padded.File("model.safetensors"), tensors);

  auto answer = [&](const std::string& backbone) {
    ServeConfig c = TestConfig();
    c.backbone = backbone;
    c.adapters.clear();  // plain text generation needs none (and the starter adapter names its backbone)
    Start(c);
    v1::GenerateRequest request;
    request.set_prompt("a dog is");
    request.set_max_new_tokens(12);
    grpc::ClientContext context;
    auto reader = stub_->Generate(&context, request);
    v1::GenerateResponse response;
    std::string text;
    while (reader->Read(&response))
      if (response.has_token()) text += response.token().text();
    const grpc::Status status = reader->Finish();
    EXPECT_TRUE(status.ok()) << status.error_message();
    stub_.reset();
    server_.reset();
    return text;
  };
  const std::string expected = answer(from);
  ASSERT_FALSE(expected.empty());
  EXPECT_EQ(answer(padded.path()), expected);
}

TEST_F(ServerTest, SynthesizeStreamsAudioChunksAndRefusesBadRequests) {
  const TtsAdapterFiles tts;
  ServeConfig config = TestConfig();
  config.adapters.push_back(tts.Entry());
  config.max_synthesis_characters = 300;
  Start(config);

  grpc::ClientContext list_context;
  v1::ListModelsResponse models;
  ASSERT_TRUE(stub_->ListModels(&list_context, v1::ListModelsRequest(), &models).ok());
  ASSERT_EQ(models.voices_size(), 1);
  EXPECT_EQ(models.voices(0), "default");

  struct Result {
    grpc::Status status;
    std::vector<v1::AudioChunk> chunks;
    v1::SynthesizeSummary summary;
    int summaries = 0;
  };
  auto synthesize = [&](const v1::SynthesizeRequest& request) {
    grpc::ClientContext context;
    auto reader = stub_->Synthesize(&context, request);
    Result r;
    v1::SynthesizeResponse response;
    while (reader->Read(&response)) {
      EXPECT_EQ(r.summaries, 0) << "nothing after the summary";
      if (response.has_audio()) r.chunks.push_back(response.audio());
      if (response.has_summary()) {
        r.summary = response.summary();
        ++r.summaries;
      }
    }
    r.status = reader->Finish();
    return r;
  };
  v1::SynthesizeRequest request;
  request.set_text("The dog barks at the cat.");
  request.set_sample_rate_hz(8000);
  const Result linear = synthesize(request);
  ASSERT_TRUE(linear.status.ok()) << linear.status.error_message();
  ASSERT_GE(linear.chunks.size(), 2u);
  EXPECT_EQ(linear.summaries, 1);
  size_t samples = 0;
  for (const v1::AudioChunk& c : linear.chunks) {
    EXPECT_EQ(c.sample_rate_hz(), 8000);
    EXPECT_EQ(c.encoding(), v1::LINEAR16);
    EXPECT_NEAR(c.start_seconds(), samples / 8000.0, 1e-9);
    EXPECT_EQ(c.audio().size() % 2, 0u);
    samples += c.audio().size() / 2;
  }
  EXPECT_NEAR(linear.summary.audio_seconds(), samples / 8000.0, 1e-9);
  EXPECT_GT(linear.summary.first_audio_ms(), 0);
  EXPECT_GE(linear.summary.total_ms(), linear.summary.first_audio_ms());

  // Native rate, FLOAT32: 160 samples per unit frame, and the same speech as at 8 kHz (same
  // greedy units), about twice the samples.
  request.set_sample_rate_hz(0);
  request.set_encoding(v1::FLOAT32);
  const Result native = synthesize(request);
  ASSERT_TRUE(native.status.ok()) << native.status.error_message();
  size_t floats = 0;
  for (const v1::AudioChunk& c : native.chunks) {
    EXPECT_EQ(c.sample_rate_hz(), 16000);
    floats += c.audio().size() / 4;
    const std::vector<float> decoded = DecodePcm(c.audio(), v1::FLOAT32, "chunk");
    for (const float x : decoded) ASSERT_LE(std::abs(x), 1.0f);
  }
  EXPECT_EQ(floats % 160, 0u);
  EXPECT_NEAR(static_cast<double>(samples), floats / 2.0, 200);

  auto expect_invalid = [&](v1::SynthesizeRequest bad, const std::string& message) {
    const Result r = synthesize(bad);
    EXPECT_EQ(r.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << message;
    EXPECT_NE(r.status.error_message().find(message), std::string::npos) << r.status.error_message();
    EXPECT_TRUE(r.chunks.empty());
  };
  v1::SynthesizeRequest bad = request;
  bad.set_text("  ");
  expect_invalid(bad, "text is empty");
  bad.set_text(std::string(301, 'a'));
  expect_invalid(bad, "text has 301 characters; this server speaks at most 300");
  bad = request;
  bad.set_voice("alto");
  expect_invalid(bad, "voice 'alto' is not served (voices: default)");
  bad = request;
  bad.set_sample_rate_hz(100);
  expect_invalid(bad, "sample_rate_hz must be 0 (native) or in [8000, 192000], got 100");
  bad = request;
  bad.set_encoding(static_cast<v1::AudioEncoding>(9));
  expect_invalid(bad, "encoding must be LINEAR16 or FLOAT32");
  bad = request;
  bad.set_text("\xE2\x98\x83\xE2\x98\x83");
  expect_invalid(bad, "the tokenizer knows no character of");
  ExpectNormalStreamWorks();

  // respond_with_audio: the answer's tokens, then its audio at the asked rate, then the summary.
  v1::ConverseRequest respond = Config(v1::LINEAR16, 16000, v1::RESPOND);
  respond.mutable_config()->set_respond_with_audio(true);
  respond.mutable_config()->set_output_sample_rate_hz(24000);
  const Call spoken = Send(Stream(respond, Linear16(Speech("what is a dog")), 5120));
  ASSERT_TRUE(spoken.status.ok()) << spoken.status.error_message();
  int stage = 0;  // 0 = before audio, 1 = audio, 2 = summary seen
  int tokens = 0, audio_chunks = 0;
  for (const v1::ConverseResponse& r : spoken.responses) {
    if (r.has_answer_token()) {
      EXPECT_EQ(stage, 0) << "answer tokens come before the audio";
      ++tokens;
    }
    if (r.has_answer_audio()) {
      EXPECT_LE(stage, 1);
      stage = 1;
      ++audio_chunks;
      EXPECT_EQ(r.answer_audio().sample_rate_hz(), 24000);
      EXPECT_EQ(r.answer_audio().encoding(), v1::LINEAR16);
    }
    if (r.has_summary()) stage = 2;
  }
  EXPECT_GT(tokens, 0);
  EXPECT_GT(audio_chunks, 0);
  EXPECT_EQ(stage, 2);
  v1::ConverseRequest transcribe_audio = Config(v1::LINEAR16, 16000, v1::TRANSCRIBE);
  transcribe_audio.mutable_config()->set_respond_with_audio(true);
  const Call refused = Send({transcribe_audio});
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(refused.status.error_message().find("respond_with_audio needs task RESPOND"), std::string::npos);
}

TEST_F(ServerTest, TwoAdaptersOverOneBackboneEachAnswerAsTheirOfflineModel) {
  // A fresh image-captioning adapter without LoRA next to the spoken-QA adapter with LoRA: rows of
  // the two run in one scheduler and must each decode exactly as their own model offline (the
  // LoRA weights are swapped in and scaled to 0 between them).
  testing::TempDir dir;
  const std::string yaml = dir.File("caption.yaml"), adapter_dir = dir.File("caption_adapter");
  {
    std::ofstream out(yaml);
    out << "model:\n  backbone: " << kRoot << "/samples/models/backbone_tiny\n  image:\n    encoder: " << kRoot
        << "/samples/models/image_encoder_tiny\n    projector: {type: mlp}\n";
  }
  adapters::MultimodalConfig caption_config;
  config::Document doc = config::Document::LoadFile(yaml);
  caption_config.Load(doc.Root().Child("model"));
  torch::manual_seed(5);
  adapters::MultimodalLM(caption_config)->SaveAdapters(adapter_dir);
  {
    std::ofstream out(adapter_dir + "/tasks.json");
    out << R"({"tasks": {"caption": "<image> Describe the image:"}})";
  }
  ServeConfig config = TestConfig();
  AdapterEntry caption;
  caption.name = "cap";
  caption.config = yaml;
  caption.adapters = adapter_dir;
  config.adapters.push_back(caption);
  Start(config);

  const datagen::ShapeScene scene = datagen::SampleScene(11, 64);
  std::vector<uchar> png;
  cv::Mat bgr;
  cv::cvtColor(datagen::RenderScene(scene, 64), bgr, cv::COLOR_RGB2BGR);
  ASSERT_TRUE(cv::imencode(".png", bgr, png));
  const std::vector<float> speech = Speech("what is a dog");

  std::vector<int64_t> caption_ids;
  Call answer;
  std::thread image_thread([&] {
    grpc::ClientContext context;
    v1::GenerateRequest request;
    request.set_prompt("Describe the image:");  // the image goes before the text
    request.add_images()->set_data(std::string(png.begin(), png.end()));
    request.set_max_new_tokens(12);
    auto reader = stub_->Generate(&context, request);
    v1::GenerateResponse response;
    while (reader->Read(&response)) {
      if (response.has_token()) caption_ids.push_back(response.token().token_id());
      if (response.has_summary()) EXPECT_EQ(response.summary().adapter(), "cap");
    }
    EXPECT_TRUE(reader->Finish().ok());
  });
  std::thread speech_thread(
      [&] { answer = Send(Stream(Config(v1::FLOAT32, 16000, v1::RESPOND), Float32(speech), 16000)); });
  image_thread.join();
  speech_thread.join();
  ASSERT_TRUE(answer.status.ok()) << answer.status.error_message();

  text::GenerationOptions options;
  options.max_new_tokens = 12;
  adapters::MultimodalLM captioner(caption_config);
  captioner->LoadAdapters(adapter_dir);
  captioner->eval();
  adapters::MultimodalExample image_example;
  image_example.prompt = "<image> Describe the image:";
  image_example.images = {captioner->ImagePixels(vision::DecodeImage(std::string(png.begin(), png.end()), "png"))};
  EXPECT_EQ(caption_ids, captioner->Generate({image_example}, options).tokens[0]);

  adapters::MultimodalLM answerer = StarterSqaModel();
  adapters::MultimodalExample speech_example;
  speech_example.prompt = "<speech> Answer:";
  speech_example.speech = {answerer->SpeechFeatures(speech)};
  options.max_new_tokens = 16;
  EXPECT_EQ(answer.AnswerIds(), answerer->Generate({speech_example}, options).tokens[0]);

  // Images need an adapter with an image branch.
  grpc::ClientContext context;
  v1::GenerateRequest request;
  request.set_prompt("Describe the image:");
  request.add_images()->set_data(std::string(png.begin(), png.end()));
  request.set_adapter("sqa");
  auto reader = stub_->Generate(&context, request);
  v1::GenerateResponse response;
  while (reader->Read(&response)) {
  }
  const grpc::Status status = reader->Finish();
  EXPECT_EQ(status.error_code(), StatusCode::FAILED_PRECONDITION);
  EXPECT_NE(status.error_message().find("adapter 'sqa' has no image input"), std::string::npos) << status.error_message();
}

TEST(DecodePcm, DecodesLittleEndianSamplesAndNamesBadInput) {
  const std::string bytes("\x00\x80\xff\x7f\x00\x00\x01\x00", 8);
  const std::vector<float> samples = DecodePcm(bytes, v1::LINEAR16, "audio");
  ASSERT_EQ(samples.size(), 4u);
  EXPECT_FLOAT_EQ(samples[0], -1.f);
  EXPECT_FLOAT_EQ(samples[1], 32767.f / 32768.f);
  EXPECT_FLOAT_EQ(samples[2], 0.f);
  EXPECT_FLOAT_EQ(samples[3], 1.f / 32768.f);
  const float values[2] = {0.5f, -0.25f};
  const std::vector<float> floats = DecodePcm(std::string(reinterpret_cast<const char*>(values), 8), v1::FLOAT32, "a");
  EXPECT_EQ(floats, std::vector<float>({0.5f, -0.25f}));
  EXPECT_SLM_ERROR(DecodePcm("abc", v1::LINEAR16, "message 2 audio"), "message 2 audio: 3 bytes");
  EXPECT_SLM_ERROR(DecodePcm("abcdef", v1::FLOAT32, "x"), "6 bytes is not a whole number of FLOAT32");
  EXPECT_SLM_ERROR(DecodePcm("ab", v1::AUDIO_ENCODING_UNSPECIFIED, "x"), "encoding must be LINEAR16 or FLOAT32");
  // An empty chunk is no samples (the converse fuzzer found a memcpy into no buffer for FLOAT32).
  EXPECT_TRUE(DecodePcm("", v1::FLOAT32, "x").empty());
  EXPECT_TRUE(DecodePcm("", v1::LINEAR16, "x").empty());
}

}  // namespace
}  // namespace slm::serve
