// The gRPC server end to end over loopback, in process, on the committed starter models
// (backbone_tiny, speech_encoder_tiny with its CTC head, the starter spoken-QA adapter). Streams are
// sent as fast as possible (no real-time pacing): these tests check behaviour, never speed.
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

TEST_F(ServerTest, BadRequestsGetTheirCodeAndTheServerKeepsServing) {
  Start();
  const std::vector<float> speech = Speech("what is a dog");
  const std::string pcm = Linear16(speech);
  struct Case {
    std::string name;
    std::vector<v1::ConverseRequest> requests;
    StatusCode code;
    std::string message;
  };
  auto with = [&](auto edit) {
    v1::ConverseRequest c = Config(v1::LINEAR16, 16000);
    edit(*c.mutable_config());
    return std::vector<v1::ConverseRequest>{c, Audio(pcm)};
  };
  v1::ConverseRequest eou;
  eou.mutable_end_of_utterance();
  std::vector<float> nan_samples(100, 0.1f), inf_samples(100, 0.1f);
  nan_samples[17] = std::numeric_limits<float>::quiet_NaN();
  inf_samples[3] = std::numeric_limits<float>::infinity();
  const std::vector<Case> cases = {
      {"audio before config", {Audio(pcm)}, StatusCode::INVALID_ARGUMENT, "audio before config"},
      {"two configs", {Config(v1::LINEAR16, 16000), Config(v1::LINEAR16, 16000)}, StatusCode::INVALID_ARGUMENT,
       "second StreamConfig"},
      {"no encoding", with([](v1::StreamConfig& c) { c.set_encoding(v1::AUDIO_ENCODING_UNSPECIFIED); }),
       StatusCode::INVALID_ARGUMENT, "config.encoding"},
      {"unknown encoding", with([](v1::StreamConfig& c) { c.set_encoding(static_cast<v1::AudioEncoding>(7)); }),
       StatusCode::INVALID_ARGUMENT, "config.encoding"},
      {"rate 0", with([](v1::StreamConfig& c) { c.set_sample_rate_hz(0); }), StatusCode::INVALID_ARGUMENT,
       "sample_rate_hz 0"},
      {"rate 1e9", with([](v1::StreamConfig& c) { c.set_sample_rate_hz(1000000000); }), StatusCode::INVALID_ARGUMENT,
       "sample_rate_hz 1000000000"},
      {"odd LINEAR16 bytes", {Config(v1::LINEAR16, 16000), Audio(pcm.substr(0, 301))}, StatusCode::INVALID_ARGUMENT,
       "301 bytes is not a whole number of LINEAR16"},
      {"NaN float", {Config(v1::FLOAT32, 16000), Audio(Float32(nan_samples))}, StatusCode::INVALID_ARGUMENT,
       "sample 17 is NaN"},
      {"Inf float", {Config(v1::FLOAT32, 16000), Audio(Float32(inf_samples))}, StatusCode::INVALID_ARGUMENT,
       "sample 3 is infinite"},
      {"chunk over the limit", {Config(v1::LINEAR16, 16000), Audio(std::string(64002, '\0'))},
       StatusCode::INVALID_ARGUMENT, "over this server's limit of 64000 bytes"},
      {"unknown adapter", with([](v1::StreamConfig& c) { c.set_adapter("nope"); }), StatusCode::NOT_FOUND,
       "unknown adapter 'nope' (this server has: sqa)"},
      {"unknown model", with([](v1::StreamConfig& c) { c.set_model("big"); }), StatusCode::NOT_FOUND,
       "unknown model 'big'"},
      {"empty stream", {}, StatusCode::INVALID_ARGUMENT, "empty stream"},
      {"config only", {Config(v1::LINEAR16, 16000)}, StatusCode::INVALID_ARGUMENT, "without any audio"},
      {"negative max tokens", with([](v1::StreamConfig& c) { c.set_max_answer_tokens(-1); }),
       StatusCode::INVALID_ARGUMENT, "max_answer_tokens must be >= 0"},
      {"audio answers", with([](v1::StreamConfig& c) { c.set_task(v1::RESPOND); c.set_respond_with_audio(true); }),
       StatusCode::FAILED_PRECONDITION, "no speech synthesizer"},
      {"empty message", {Config(v1::LINEAR16, 16000), v1::ConverseRequest()}, StatusCode::INVALID_ARGUMENT,
       "nothing set"},
  };
  for (const Case& c : cases) {
    const Call call = Send(c.requests);
    EXPECT_EQ(call.status.error_code(), c.code) << c.name << ": " << call.status.error_message();
    EXPECT_NE(call.status.error_message().find(c.message), std::string::npos)
        << c.name << ": " << call.status.error_message();
  }
  ExpectNormalStreamWorks();
  EXPECT_EQ(server_->Service().ActiveStreams(), 0);
}

TEST_F(ServerTest, UtterancesEndAtEndpointsExplicitEndsAndTheMaximumDuration) {
  Start();
  const std::vector<float> first = Speech("what is a dog"), second = Speech("what is water");
  std::vector<float> audio = first;
  audio.insert(audio.end(), 16000, 0.f);  // 1 s of silence: an endpoint at 500 ms
  audio.insert(audio.end(), second.begin(), second.end());
  v1::ConverseRequest config = Config(v1::LINEAR16, 16000);
  config.mutable_config()->set_endpointing_silence_ms(500);
  std::vector<v1::ConverseRequest> requests = Stream(config, Linear16(audio), 3200);
  v1::ConverseRequest eou;
  eou.mutable_end_of_utterance();
  requests.push_back(eou);
  const Call call = Send(requests);
  ASSERT_TRUE(call.status.ok()) << call.status.error_message();
  const auto finals = call.Finals();
  ASSERT_EQ(finals.size(), 2u);
  EXPECT_EQ(finals[0]->end_reason(), v1::ENDPOINT_DETECTED);
  EXPECT_EQ(finals[1]->end_reason(), v1::END_OF_UTTERANCE_MESSAGE);
  EXPECT_GT(finals[1]->start_seconds(), finals[0]->end_seconds());
  EXPECT_EQ(call.Count(v1::ConverseResponse::kSummary), 2);
  int last_index = 0;
  for (const auto& r : call.responses) {
    EXPECT_GE(r.utterance_index(), last_index);
    last_index = r.utterance_index();
  }
  EXPECT_EQ(last_index, 1);

  // 6 s of continuous speech-level noise with a 4 s limit: cut at 4 s (MAX_DURATION), then the rest.
  std::vector<float> long_audio(6 * 16000);
  for (size_t i = 0; i < long_audio.size(); ++i) long_audio[i] = 0.2f * std::sin(0.05f * i);
  const Call cut = Send(Stream(Config(v1::LINEAR16, 16000), Linear16(long_audio), 32000));
  ASSERT_TRUE(cut.status.ok()) << cut.status.error_message();
  ASSERT_EQ(cut.Finals().size(), 2u);
  EXPECT_EQ(cut.Finals()[0]->end_reason(), v1::MAX_DURATION);
  EXPECT_NEAR(cut.Finals()[0]->end_seconds(), 4.0, 0.011);
  EXPECT_EQ(cut.Finals()[1]->end_reason(), v1::CLIENT_HALF_CLOSE);
}

TEST_F(ServerTest, TranscribeTakesFilesAndRawSamplesAndRejectsBadAudio) {
  Start();
  const std::vector<float> speech = Speech("what is a dog");
  testing::TempDir dir;
  audio::Write(dir.File("q.wav"), audio::Resample(speech, 16000, 22050), 22050);
  std::ifstream in(dir.File("q.wav"), std::ios::binary);
  const std::string file((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto transcribe = [&](const v1::TranscribeRequest& request, v1::TranscribeResponse* response) {
    grpc::ClientContext context;
    return stub_->Transcribe(&context, request, response);
  };
  v1::TranscribeRequest request;
  request.set_audio(file);
  v1::TranscribeResponse response;
  ASSERT_TRUE(transcribe(request, &response).ok());
  EXPECT_NEAR(response.audio_seconds(), double(speech.size()) / 16000, 0.01);
  EXPECT_FALSE(response.transcript().text().empty());
  EXPECT_FALSE(response.request_id().empty());

  v1::TranscribeRequest raw;
  raw.set_audio(Float32(speech));
  raw.set_encoding(v1::FLOAT32);
  raw.set_sample_rate_hz(16000);
  ASSERT_TRUE(transcribe(raw, &response).ok());
  EXPECT_EQ(response.transcript().text(), OfflineCtcText(speech));

  v1::TranscribeRequest bad;
  bad.set_audio("this is not audio at all");
  grpc::Status status = transcribe(bad, &response);
  EXPECT_EQ(status.error_code(), StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(status.error_message().find("not a readable audio file"), std::string::npos) << status.error_message();
  EXPECT_EQ(status.error_message().find("slm-transcribe"), std::string::npos) << "leaks the temporary path";
  bad.set_audio("");
  EXPECT_EQ(transcribe(bad, &response).error_code(), StatusCode::INVALID_ARGUMENT);
  v1::TranscribeRequest too_long = raw;
  too_long.set_audio(Float32(std::vector<float>(5 * 16000, 0.f)));
  status = transcribe(too_long, &response);
  EXPECT_EQ(status.error_code(), StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_NE(status.error_message().find("limit of 4 s"), std::string::npos) << status.error_message();
  raw.set_sample_rate_hz(0);
  EXPECT_EQ(transcribe(raw, &response).error_code(), StatusCode::INVALID_ARGUMENT);
}

TEST_F(ServerTest, StreamsOverTheLimitAreRejectedAtOnceAndCancellationFreesTheSlot) {
  Start();
  const std::string pcm = Linear16(Speech("what is a dog"));
  // Three streams hold their slots (config + audio, not closed).
  std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
  std::vector<std::unique_ptr<grpc::ClientReaderWriter<v1::ConverseRequest, v1::ConverseResponse>>> streams;
  for (int i = 0; i < 3; ++i) {
    contexts.push_back(std::make_unique<grpc::ClientContext>());
    streams.push_back(stub_->Converse(contexts.back().get()));
    ASSERT_TRUE(streams.back()->Write(Config(v1::LINEAR16, 16000)));
    ASSERT_TRUE(streams.back()->Write(Audio(pcm)));
  }
  auto wait_for = [&](int streams_open) {
    for (int i = 0; i < 200 && server_->Service().ActiveStreams() != streams_open; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    return server_->Service().ActiveStreams();
  };
  ASSERT_EQ(wait_for(3), 3);
  const auto before = std::chrono::steady_clock::now();
  const Call rejected = Send({Config(v1::LINEAR16, 16000), Audio(pcm)});
  EXPECT_EQ(rejected.status.error_code(), StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_NE(rejected.status.error_message().find("limit of 3 concurrent streams"), std::string::npos);
  EXPECT_LT(std::chrono::steady_clock::now() - before, std::chrono::seconds(5)) << "rejected at once";
  contexts[0]->TryCancel();
  EXPECT_EQ(streams[0]->Finish().error_code(), StatusCode::CANCELLED);
  EXPECT_EQ(wait_for(2), 2);
  ExpectNormalStreamWorks();
  for (size_t i = 1; i < streams.size(); ++i) {
    streams[i]->WritesDone();
    v1::ConverseResponse r;
    while (streams[i]->Read(&r)) {
    }
    EXPECT_TRUE(streams[i]->Finish().ok());
  }
}

TEST_F(ServerTest, CancelledGenerationLeavesTheBatchSoon) {
  ServeConfig config = TestConfig();
  config.max_answer_tokens_limit = 240;
  Start(config);
  grpc::ClientContext context;
  v1::GenerateRequest request;
  request.set_prompt("a dog is");
  request.set_max_new_tokens(240);
  // Near-uniform sampling over 4096 pieces, fixed seed: this row decodes far longer than the test
  // takes to cancel it (deterministically: the same tokens every run).
  request.set_temperature(20.0);
  request.set_seed(3);
  auto reader = stub_->Generate(&context, request);
  v1::GenerateResponse response;
  ASSERT_TRUE(reader->Read(&response));
  context.TryCancel();
  while (reader->Read(&response)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), StatusCode::CANCELLED);
  // The engine drops a cancelled row before its next step (engine.cpp), but the cancel reaches the
  // server's context asynchronously: the client's Finish returns first, and on a fast CPU a few
  // decode steps of the test model can run meanwhile. So the bound is "soon", not "next step":
  // far fewer than the 240 the request asked for.
  engine::Engine& engine = *server_->GetEngine();
  const int64_t steps_at_cancel = engine.Stats()["decode_steps"].get<int64_t>();
  for (int i = 0; i < 500 && engine.ActiveRequests() > 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  EXPECT_EQ(engine.ActiveRequests(), 0);
  EXPECT_LE(engine.Stats()["decode_steps"].get<int64_t>() - steps_at_cancel, 20);
  EXPECT_EQ(server_->Service().ActiveStreams(), 0);
}

TEST_F(ServerTest, DeadlinesEndLongGenerationsAndOversizeMessagesAreRefused) {
  ServeConfig config = TestConfig();
  config.max_answer_tokens_limit = 240;
  config.max_message_bytes = 100000;
  config.max_chunk_bytes = 1 << 20;
  Start(config);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(150));
  v1::GenerateRequest request;
  request.set_prompt("a dog is");
  request.set_max_new_tokens(240);
  request.set_temperature(20.0);  // as in the cancellation test: decodes far longer than 150 ms
  request.set_seed(3);
  auto reader = stub_->Generate(&context, request);
  v1::GenerateResponse response;
  int tokens = 0;
  while (reader->Read(&response)) tokens += response.has_token();
  EXPECT_EQ(reader->Finish().error_code(), StatusCode::DEADLINE_EXCEEDED);
  EXPECT_LT(tokens, 240);
  engine::Engine& engine = *server_->GetEngine();
  for (int i = 0; i < 500 && engine.ActiveRequests() > 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  EXPECT_EQ(engine.ActiveRequests(), 0);
  // A message over limits.max_message_bytes is refused by gRPC itself.
  const Call big = Send({Config(v1::LINEAR16, 16000), Audio(std::string(200000, '\0'))});
  EXPECT_EQ(big.status.error_code(), StatusCode::RESOURCE_EXHAUSTED) << big.status.error_message();
  ExpectNormalStreamWorks();
}

TEST_F(ServerTest, BearerTokenIsRequiredWhenConfigured) {
  ServeConfig config = TestConfig();
  config.auth_token = "s3cret";
  Start(config);
  v1::ListModelsResponse models;
  {
    grpc::ClientContext context;
    const grpc::Status status = stub_->ListModels(&context, {}, &models);
    EXPECT_EQ(status.error_code(), StatusCode::UNAUTHENTICATED);
  }
  {
    grpc::ClientContext context;
    context.AddMetadata("authorization", "Bearer wrong");
    EXPECT_EQ(stub_->ListModels(&context, {}, &models).error_code(), StatusCode::UNAUTHENTICATED);
  }
  {
    grpc::ClientContext context;
    Authorize(context);
    ASSERT_TRUE(stub_->ListModels(&context, {}, &models).ok());
  }
  ASSERT_EQ(models.models_size(), 1);
  EXPECT_EQ(models.models(0).name(), "tiny");
  EXPECT_TRUE(models.models(0).accepts_audio());
  ASSERT_EQ(models.models(0).adapters_size(), 1);
  EXPECT_EQ(models.models(0).adapters(0).name(), "sqa");
  EXPECT_EQ(models.models(0).adapters(0).tasks(0), "sqa");
  EXPECT_EQ(models.models(0).context_length(), 256);
  const Call unauthenticated = [&] {
    ServeConfig none = config_;
    none.auth_token.clear();
    config_.auth_token.swap(none.auth_token);  // send without the token
    Call c = Send({Config(v1::LINEAR16, 16000)});
    config_.auth_token.swap(none.auth_token);
    return c;
  }();
  EXPECT_EQ(unauthenticated.status.error_code(), StatusCode::UNAUTHENTICATED);
  ExpectNormalStreamWorks();
}

TEST_F(ServerTest, DrainLetsRunningStreamsFinishAndTurnsNewOnesAway) {
  Start();
  const std::string pcm = Linear16(Speech("what is a dog"));
  grpc::ClientContext context;
  auto stream = stub_->Converse(&context);
  ASSERT_TRUE(stream->Write(Config(v1::LINEAR16, 16000, v1::RESPOND)));
  ASSERT_TRUE(stream->Write(Audio(pcm)));
  for (int i = 0; i < 200 && server_->Service().ActiveStreams() == 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  std::thread drain([&] { server_->Drain(5.0); });
  for (int i = 0; i < 200; ++i) {  // until the drain has begun
    grpc::ClientContext probe;
    v1::ListModelsResponse models;
    if (stub_->ListModels(&probe, {}, &models).error_code() == StatusCode::UNAVAILABLE) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  {
    grpc::ClientContext probe;
    v1::ListModelsResponse models;
    const grpc::Status status = stub_->ListModels(&probe, {}, &models);
    EXPECT_EQ(status.error_code(), StatusCode::UNAVAILABLE);
    EXPECT_NE(status.error_message().find("draining"), std::string::npos) << status.error_message();
  }
  stream->WritesDone();
  v1::ConverseResponse response;
  int finals = 0, tokens = 0;
  while (stream->Read(&response)) {
    finals += response.has_final_transcript();
    tokens += response.has_answer_token();
  }
  EXPECT_TRUE(stream->Finish().ok());
  EXPECT_EQ(finals, 1);
  EXPECT_GE(tokens, 1);
  drain.join();
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

TEST_F(ServerTest, TlsServesEncryptedCallsOnly) {
  testing::TempDir dir;
  const std::string key = dir.File("key.pem"), cert = dir.File("cert.pem");
  const std::string command = "openssl req -x509 -newkey rsa:2048 -nodes -keyout " + key + " -out " + cert +
                              " -days 1 -subj /CN=localhost -addext subjectAltName=DNS:localhost >/dev/null 2>&1";
  if (std::system(command.c_str()) != 0) GTEST_SKIP() << "no openssl command to make a test certificate";
  ServeConfig config = TestConfig();
  config.tls_cert = cert;
  config.tls_key = key;
  Start(config);
  ChannelOptions options;
  options.server = "localhost:" + std::to_string(server_->Port());
  options.ca_file = cert;
  auto secure = v1::Speech::NewStub(MakeChannel(options));
  v1::ListModelsResponse models;
  {
    grpc::ClientContext context;
    const grpc::Status status = secure->ListModels(&context, {}, &models);
    ASSERT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(models.models(0).name(), "tiny");
  }
  {
    grpc::ClientContext context;  // plaintext against the TLS port
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    EXPECT_FALSE(stub_->ListModels(&context, {}, &models).ok());
  }
  // Missing certificate files are named.
  ServeConfig bad = TestConfig();
  bad.tls_cert = dir.File("missing.pem");
  bad.tls_key = key;
  EXPECT_SLM_ERROR(Server{bad}, "tls.cert: cannot read");
}

TEST_F(ServerTest, CallsWhileTheModelLoadsAreUnavailable) {
  config_ = TestConfig();
  server_ = std::make_unique<Server>(config_);  // listening, model not loaded yet
  stub_ = v1::Speech::NewStub(grpc::CreateChannel(server_->Address(), grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  v1::ListModelsResponse models;
  const grpc::Status status = stub_->ListModels(&context, {}, &models);
  EXPECT_EQ(status.error_code(), StatusCode::UNAVAILABLE);
  EXPECT_NE(status.error_message().find("loading"), std::string::npos) << status.error_message();
  const Call call = Send({Config(v1::LINEAR16, 16000)});
  EXPECT_EQ(call.status.error_code(), StatusCode::UNAVAILABLE);
  server_->Load();
  ExpectNormalStreamWorks();
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
