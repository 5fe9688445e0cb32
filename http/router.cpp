#include "http/router.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <ctime>

#include "core/log.h"
#include "core/strings.h"
#include "http/endpoints.h"
#include "http/errors.h"
#include "http/sse.h"
#include "http/static_files.h"

namespace slm::http {

namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;

const std::vector<std::pair<std::string, std::string>> kCors = {{"Access-Control-Allow-Origin", "*"}};

bool SameSecret(const std::string& a, const std::string& b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

// Records status, duration and open streams of one request for the metrics, around the
// transport's Exchange.
class MeteredExchange final : public Exchange {
 public:
  MeteredExchange(std::shared_ptr<Exchange> inner, Metrics& metrics, std::string path, Clock::time_point arrived)
      : inner_(std::move(inner)), metrics_(metrics), path_(std::move(path)), arrived_(arrived) {}
  ~MeteredExchange() override {
    if (streaming_) Finish();
  }
  void Reply(Response response) override {
    for (const auto& header : kCors) response.headers.push_back(header);
    status_ = response.status;
    inner_->Reply(std::move(response));
    Count();
  }
  bool BeginStream(int status, const std::string& content_type,
                   const std::vector<std::pair<std::string, std::string>>& headers) override {
    std::vector<std::pair<std::string, std::string>> all = headers;
    for (const auto& header : kCors) all.push_back(header);
    status_ = status;
    streaming_ = true;
    metrics_.StreamOpened("sse");
    return inner_->BeginStream(status, content_type, all);
  }
  bool Write(std::string_view data) override { return inner_->Write(data); }
  void EndStream() override {
    inner_->EndStream();
    Finish();
  }
  bool ClientGone() const override { return inner_->ClientGone(); }
  bool Answered() const override { return inner_->Answered(); }
  // Ends a streamed answer its handler left open (it returned after a failed write).
  void Complete() {
    if (streaming_) EndStream();
  }

 private:
  void Finish() {
    if (!streaming_) return;
    streaming_ = false;
    metrics_.StreamClosed("sse");
    Count();
  }
  void Count() { metrics_.CountRequest(path_, status_, std::chrono::duration<double>(Clock::now() - arrived_).count()); }

  std::shared_ptr<Exchange> inner_;
  Metrics& metrics_;
  const std::string path_;
  const Clock::time_point arrived_;
  int status_ = 0;
  bool streaming_ = false;
};

void ReplyError(Exchange& exchange, Metrics& metrics, const ApiError& error) {
  metrics.CountError(error.status(), error.code());
  if (!exchange.Answered()) {
    exchange.Reply(ErrorResponse(error));
    return;
  }
  // Headers are gone: a streamed answer ends with an error event.
  exchange.Write("data: " + ErrorBody(error) + "\n\n");
  exchange.EndStream();
}

Response JsonResponse(int status, const json& body) {
  Response response;
  response.status = status;
  response.body = JsonText(body);
  return response;
}

}  // namespace

int64_t UnixTime() { return static_cast<int64_t>(std::time(nullptr)); }

std::string ServedNames(engine::Engine& engine) {
  std::string names = engine.Model().Name();
  for (const engine::AdapterRef& a : engine.Model().Adapters()) names += ", " + a->name;
  return names;
}

json ModelList(engine::Engine& engine) {
  const engine::ModelInfo info = engine.Info();
  json data = json::array();
  data.push_back({{"id", info.name},
                  {"object", "model"},
                  {"created", 0},
                  {"owned_by", "slm"},
                  {"description", info.description},
                  {"accepts_audio", info.accepts_audio},
                  {"accepts_images", info.accepts_images},
                  {"context_length", info.context_length},
                  {"max_respond_seconds", info.max_respond_seconds},
                  {"voices", info.voices}});
  for (const engine::AdapterInfo& a : info.adapters)
    data.push_back({{"id", a.name},
                    {"object", "model"},
                    {"created", 0},
                    {"owned_by", "slm"},
                    {"parent", info.name},
                    {"root", info.name},
                    {"tasks", a.tasks},
                    {"is_default", a.is_default}});
  return {{"object", "list"}, {"data", data}};
}

json ModelCard(engine::Engine& engine, const std::string& id) {
  const json list = ModelList(engine);  // named: a range-for over a temporary's member dangles
  for (const json& model : list["data"])
    if (model["id"] == id) return model;
  Fail(404, Str("model: unknown model '", id, "' (this server has: ", ServedNames(engine), ")"), "model", "model_not_found");
}

Router::Router(const HttpConfig& config, const Security& security, Metrics& metrics, Spawn spawn)
    : config_(config), security_(security), metrics_(metrics), spawn_(std::move(spawn)) {}

void Router::Authorize(const Request& request) const {
  if (security_.auth_token.empty()) return;
  const std::string& header = request.Header("authorization");
  if (header.empty()) Fail(401, "missing 'Authorization: Bearer <token>' header", "", "missing_api_key");
  if (!SameSecret(header, "Bearer " + security_.auth_token)) Fail(401, "wrong bearer token", "", "invalid_api_key");
}

std::string Router::RequestId(const Request& request) {
  const std::string& given = request.Header("x-request-id");
  if (!given.empty() && given.size() <= 64 &&
      given.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.") == std::string::npos)
    return given;
  char id[48];
  std::snprintf(id, sizeof(id), "http-%d-%llu", static_cast<int>(::getpid()), static_cast<unsigned long long>(next_id_++));
  return id;
}

void Router::Handle(Request request, std::shared_ptr<Exchange> transport) {
  const Clock::time_point arrived = Clock::now();
  auto exchange = std::make_shared<MeteredExchange>(std::move(transport), metrics_, request.path, arrived);
  const bool post = request.method == "POST";
  const bool engine_work = post && (request.path == "/v1/audio/transcriptions" || request.path == "/v1/audio/speech" ||
                                    request.path == "/v1/chat/completions");
  active_->fetch_add(1);
  if (!engine_work) {
    Dispatch(request, *exchange, arrived);
    exchange->Complete();
    active_->fetch_sub(1);
    return;
  }
  auto shared = std::make_shared<Request>(std::move(request));
  spawn_([this, shared, exchange, arrived, active = active_] {
    Dispatch(*shared, *exchange, arrived);
    exchange->Complete();
    active->fetch_sub(1);
  });
}

void Router::Dispatch(const Request& request, Exchange& exchange, Clock::time_point arrived) {
  try {
    const std::string& path = request.path;
    const std::string& method = request.method;
    if (method == "OPTIONS") {
      Response response;
      response.status = 204;
      response.content_type.clear();
      response.headers = {{"Access-Control-Allow-Methods", "GET, POST, OPTIONS"},
                          {"Access-Control-Allow-Headers", "Authorization, Content-Type, X-Request-Id"},
                          {"Access-Control-Max-Age", "86400"}};
      exchange.Reply(std::move(response));
      return;
    }
    auto allow = [&](const char* wanted) {
      if (method != wanted)
        Fail(405, Str(method, " ", path, ": this path takes ", wanted), "", "method_not_allowed");
    };
    engine::Engine* engine = engine_.load();
    if (path == "/health") {
      allow("GET");
      const char* status = engine == nullptr ? "loading" : draining_ ? "draining" : "ok";
      exchange.Reply(JsonResponse(engine != nullptr && !draining_ ? 200 : 503, {{"status", status}}));
      return;
    }
    if (path == "/metrics") {
      allow("GET");
      Response response;
      response.content_type = "text/plain; version=0.0.4; charset=utf-8";
      response.body = metrics_.Render(engine ? engine->Stats() : json::object());
      exchange.Reply(std::move(response));
      return;
    }
    if (const WebAsset* asset = FindWebAsset(path)) {
      allow("GET");
      Response response;
      response.content_type = std::string(asset->content_type);
      response.body = std::string(asset->body);
      response.headers = {{"Cache-Control", "no-cache"}};
      exchange.Reply(std::move(response));
      return;
    }
    const bool models = path == "/v1/models" || StartsWith(path, "/v1/models/");
    static const std::vector<std::string> kPosts = {"/v1/audio/transcriptions", "/v1/audio/speech", "/v1/chat/completions"};
    const bool post_path = std::find(kPosts.begin(), kPosts.end(), path) != kPosts.end();
    if (!models && !post_path && path != "/v1/realtime")
      Fail(404, Str("no such path: ", method, " ", path, " (see GET /v1/models, POST /v1/audio/transcriptions, ",
                    "/v1/chat/completions, /v1/audio/speech, WebSocket /v1/realtime)"),
           "", "not_found");
    Authorize(request);
    if (path == "/v1/realtime") Fail(400, "/v1/realtime is a WebSocket endpoint: connect with Upgrade: websocket", "", "websocket_required");
    allow(models ? "GET" : "POST");
    if (engine == nullptr) Fail(503, "the server is still loading its model", "", "loading");
    if (draining_) Fail(503, "the server is draining (shutting down); retry elsewhere", "", "draining");
    if (models) {
      exchange.Reply(JsonResponse(200, path == "/v1/models" ? ModelList(*engine) : ModelCard(*engine, path.substr(11))));
      return;
    }
    const Context context{*engine, config_, metrics_, arrived, RequestId(request)};
    if (path == "/v1/audio/transcriptions") Transcriptions(context, request, exchange);
    else if (path == "/v1/audio/speech") Speech(context, request, exchange);
    else ChatCompletions(context, request, exchange);
    if (!exchange.Answered()) Fail(500, "the handler gave no answer");
  } catch (...) {
    ReplyError(exchange, metrics_, ApiErrorOf(std::current_exception()));
  }
}

std::optional<Response> Router::AdmitRealtime(const Request& upgrade, std::string* protocol) {
  protocol->clear();
  try {
    if (upgrade.path != "/v1/realtime")
      Fail(404, Str("no WebSocket endpoint at ", upgrade.path, " (the realtime API is /v1/realtime)"), "", "not_found");
    // Browsers cannot set headers on a WebSocket: OpenAI's clients send the key as a subprotocol.
    Request authorized = upgrade;
    bool offered_realtime = false;
    for (const std::string& p : Split(upgrade.Header("sec-websocket-protocol"), ", ")) {
      if (p == "realtime") offered_realtime = true;
      if (StartsWith(p, "openai-insecure-api-key.") && authorized.Header("authorization").empty())
        authorized.headers["authorization"] = "Bearer " + p.substr(24);
    }
    if (offered_realtime) *protocol = "realtime";
    Authorize(authorized);
    if (engine_.load() == nullptr) Fail(503, "the server is still loading its model", "", "loading");
    if (draining_) Fail(503, "the server is draining (shutting down); retry elsewhere", "", "draining");
    return std::nullopt;
  } catch (...) {
    const ApiError error = ApiErrorOf(std::current_exception());
    metrics_.CountError(error.status(), error.code());
    metrics_.CountRequest(upgrade.path, error.status(), 0);
    Response response = ErrorResponse(error);
    for (const auto& header : kCors) response.headers.push_back(header);
    return response;
  }
}

std::shared_ptr<RealtimeSession> Router::NewRealtime(std::shared_ptr<MessageSink> sink) {
  engine::Engine* engine = engine_.load();
  if (engine == nullptr) return nullptr;
  static std::atomic<uint64_t> sessions{1};
  const std::string id = Str(::getpid(), "_", sessions.fetch_add(1));
  active_->fetch_add(1);
  metrics_.CountRequest("/v1/realtime", 101, 0);
  return std::shared_ptr<RealtimeSession>(new RealtimeSession(*engine, std::move(sink), spawn_, metrics_, id),
                                          [active = active_](RealtimeSession* session) {
                                            delete session;
                                            active->fetch_sub(1);
                                          });
}

}  // namespace slm::http
