#include "text/chat_format.h"

#include <algorithm>
#include <filesystem>
#include <regex>

#include "core/error.h"
#include "core/fs.h"
#include "core/strings.h"
#include "text/tokenizer.h"

namespace slm::text {
namespace {

namespace stdfs = std::filesystem;
using nlohmann::json;

const char kContent[] = "{content}";

std::string Fill(const std::string& turn, const std::string& content) {
  const size_t at = turn.find(kContent);
  if (at == std::string::npos) return turn;
  return turn.substr(0, at) + content + turn.substr(at + sizeof(kContent) - 1);
}

bool Contains(const std::string& text, const char* part) { return text.find(part) != std::string::npos; }

ChatFormat Llama3() {
  ChatFormat f;
  f.name = "llama3";
  f.bos = true;
  f.system = "<|start_header_id|>system<|end_header_id|>\n\n{content}<|eot_id|>";
  f.user = "<|start_header_id|>user<|end_header_id|>\n\n{content}<|eot_id|>";
  f.assistant = "<|start_header_id|>assistant<|end_header_id|>\n\n{content}<|eot_id|>";
  f.generation = "<|start_header_id|>assistant<|end_header_id|>\n\n";
  f.trim = true;
  f.stop = {"<|eot_id|>"};
  return f;
}

ChatFormat Chatml() {
  ChatFormat f;
  f.name = "chatml";
  f.system = "<|im_start|>system\n{content}<|im_end|>\n";
  f.user = "<|im_start|>user\n{content}<|im_end|>\n";
  f.assistant = "<|im_start|>assistant\n{content}<|im_end|>\n";
  f.generation = "<|im_start|>assistant\n";
  f.stop = {"<|im_end|>"};
  return f;
}

ChatFormat Mistral() {
  ChatFormat f;
  f.name = "mistral";
  f.bos = true;
  f.user = "[INST] {content}[/INST]";
  f.assistant = " {content}</s>";
  f.system_placement = ChatFormat::SystemPlacement::kLastUser;
  f.stop = {"</s>"};
  return f;
}

ChatFormat Gemma() {
  ChatFormat f;
  f.name = "gemma";
  f.bos = true;
  f.user = "<start_of_turn>user\n{content}<end_of_turn>\n";
  f.assistant = "<start_of_turn>model\n{content}<end_of_turn>\n";
  f.generation = "<start_of_turn>model\n";
  f.system_placement = ChatFormat::SystemPlacement::kFirstUser;
  f.trim = true;
  f.stop = {"<end_of_turn>"};
  return f;
}

// "{name}" placeholders of a custom turn template other than {content}: the first one, or "".
std::string UnknownPlaceholder(const std::string& text) {
  static const std::regex placeholder(R"(\{[A-Za-z_][A-Za-z0-9_]*\})");
  for (auto it = std::sregex_iterator(text.begin(), text.end(), placeholder); it != std::sregex_iterator(); ++it)
    if (it->str() != kContent) return it->str();
  return "";
}

std::string SettingHint(const std::string& setting_key) {
  return Str("set ", setting_key, " to one of ", Join(ChatFormat::BuiltinNames()),
             " (none = no chat layout), or to a custom format {user, assistant, generation, stop, ...} ",
             "(docs/BRING_YOUR_OWN_MODEL.md)");
}

}  // namespace

const std::vector<std::string>& ChatFormat::BuiltinNames() {
  static const std::vector<std::string> names = {"none", "llama3", "chatml", "mistral", "gemma"};
  return names;
}

ChatFormat ChatFormat::Builtin(const std::string& name, const std::string& where) {
  if (name == "none") return ChatFormat();
  if (name == "llama3") return Llama3();
  if (name == "chatml") return Chatml();
  if (name == "mistral") return Mistral();
  if (name == "gemma") return Gemma();
  const std::string hint = ClosestMatch(name, BuiltinNames());
  throw Error(Str(where, ": unknown chat format '", name, "' (valid: auto, ", Join(BuiltinNames()), ")",
                  hint.empty() ? "" : Str("; did you mean '", hint, "'?")));
}

std::optional<ChatFormat> ChatFormat::Recognize(const std::string& t) {
  if (Contains(t, "<|start_header_id|>") && Contains(t, "<|eot_id|>")) {
    ChatFormat f = Llama3();
    // Llama 3.1/3.2 stamp dates into an always-present system turn; without a date argument
    // transformers' templates fall back to this one.
    if (Contains(t, "Cutting Knowledge Date")) f.system_preamble = "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n";
    return f;
  }
  if (Contains(t, "<|im_start|>") && Contains(t, "<|im_end|>")) {
    ChatFormat f = Chatml();
    // The system message a template inserts when the conversation has none, written in the
    // template as a literal ('<|im_start|>system\nYou are ...<|im_end|>'; "\n" is Jinja's escape).
    static const std::regex fallback(R"(<\|im_start\|>system(?:\\n|\n)([^'"{}<\\]+)<\|im_end\|>)");
    std::smatch match;
    if (std::regex_search(t, match, fallback)) f.default_system = match[1].str();
    return f;
  }
  if (Contains(t, "[INST]") && Contains(t, "[/INST]")) {
    ChatFormat f = Mistral();
    if (Contains(t, "' [/INST]'") || Contains(t, "\" [/INST]\"")) {  // v0.1 / v0.2: " [/INST]", unspaced answer
      f.user = "[INST] {content} [/INST]";
      f.assistant = "{content}</s>";
    }
    return f;
  }
  if (Contains(t, "<start_of_turn>") && Contains(t, "<end_of_turn>")) return Gemma();
  return std::nullopt;
}

ChatFormat ChatFormat::FromModelDir(const std::string& model_dir, const std::string& setting_key) {
  std::string chat_template, source;
  const std::string config_path = model_dir + "/tokenizer_config.json";
  if (stdfs::is_regular_file(config_path)) {
    const json config = fs::ReadJson(config_path);
    if (config.is_object() && config.contains("chat_template") && !config.at("chat_template").is_null()) {
      const json& value = config.at("chat_template");
      source = config_path + ": \"chat_template\"";
      if (value.is_string()) {
        chat_template = value.get<std::string>();
      } else if (value.is_array()) {
        // Several named templates: the one transformers uses by default.
        for (const json& entry : value)
          if (entry.is_object() && entry.value("name", "") == "default" && entry.contains("template") &&
              entry.at("template").is_string())
            chat_template = entry.at("template").get<std::string>();
        Check(!chat_template.empty(), source, " lists no template named \"default\"");
      } else {
        throw Error(Str(source, " must be a string or a list of {name, template}, got ", value.type_name()));
      }
    }
  }
  // transformers >= 4.43 may save the template next to the config instead.
  const std::string jinja_path = model_dir + "/chat_template.jinja";
  if (chat_template.empty() && stdfs::is_regular_file(jinja_path)) {
    chat_template = fs::ReadFile(jinja_path);
    source = jinja_path;
  }
  if (chat_template.empty()) return ChatFormat();
  std::optional<ChatFormat> format = Recognize(chat_template);
  Check(format.has_value(), source, ": the chat template is none slm recognises (llama3, chatml, mistral, gemma); ",
        SettingHint(setting_key));
  return *format;
}

ChatFormat ChatFormat::Resolve(const std::string& setting, const std::string& model_dir,
                               const std::string& setting_key) {
  if (setting == "auto") return FromModelDir(model_dir, setting_key);
  return Builtin(setting, setting_key);
}

ChatFormat ChatFormat::FromConfig(config::Node node) {
  ChatFormat f;
  f.name = "custom";
  std::string placement = "own_turn";
  node.Read("bos", f.bos)
      .Read("system", f.system)
      .Require("user", f.user)
      .Require("assistant", f.assistant)
      .Read("generation", f.generation)
      .Read("system_placement", placement, config::OneOf<std::string>({"own_turn", "first_user", "last_user"}))
      .Read("system_separator", f.system_separator)
      .Read("default_system", f.default_system)
      .Read("trim", f.trim)
      .Require("stop", f.stop);
  f.system_placement = placement == "first_user"  ? SystemPlacement::kFirstUser
                       : placement == "last_user" ? SystemPlacement::kLastUser
                                                  : SystemPlacement::kOwnTurn;
  const std::vector<std::pair<const char*, const std::string*>> turns = {
      {"system", &f.system}, {"user", &f.user}, {"assistant", &f.assistant}, {"generation", &f.generation}};
  for (const auto& [key, text] : turns) {
    const std::string unknown = UnknownPlaceholder(*text);
    if (!unknown.empty())
      node.Fail(key, Str("unknown placeholder ", unknown, " (the only placeholder is {content})"));
  }
  for (const char* key : {"user", "assistant"})
    if (std::string(key) == "user" ? !Contains(f.user, kContent) : !Contains(f.assistant, kContent))
      node.Fail(key, "needs the placeholder {content}");
  if (!f.system.empty() && !Contains(f.system, kContent)) node.Fail("system", "needs the placeholder {content}");
  if (Contains(f.generation, kContent)) node.Fail("generation", "takes no placeholder (it opens the answer)");
  if (f.system.empty() && f.system_placement == SystemPlacement::kOwnTurn)
    node.Fail("system", "is empty: give a system turn, or system_placement first_user / last_user");
  if (f.stop.empty()) node.Fail("stop", "must name at least one string that ends the assistant's turn");
  for (const std::string& s : f.stop)
    if (s.empty()) node.Fail("stop", "holds an empty string");
  return f;
}

std::string ChatFormat::Render(const std::vector<ChatMessage>& messages, bool add_generation_prompt) const {
  for (size_t i = 0; i < messages.size(); ++i) {
    const std::string& role = messages[i].role;
    Check(role == "system" || role == "user" || role == "assistant", "chat format ", name, ": message ", i,
          " has role '", role, "' (valid: system, user, assistant)");
    Check(role != "system" || i == 0 || IsNone(), "chat format ", name,
          ": a system message must come first (message ", i, ")");
  }
  if (IsNone()) {
    std::vector<std::string> parts;
    for (const ChatMessage& m : messages) parts.push_back(m.content);
    return Join(parts, "\n");
  }
  auto clean = [&](const std::string& text) { return trim ? Trim(text) : text; };
  size_t first = 0;
  std::string system_text = default_system;
  if (!messages.empty() && messages[0].role == "system") {
    system_text = messages[0].content;
    first = 1;
  }
  size_t first_user = messages.size(), last_user = messages.size();
  for (size_t i = first; i < messages.size(); ++i)
    if (messages[i].role == "user") {
      if (first_user == messages.size()) first_user = i;
      last_user = i;
    }
  // Mistral's template joins the system message to the last user turn only when that turn ends
  // the conversation, and drops it otherwise.
  const size_t joined = system_placement == SystemPlacement::kFirstUser ? first_user
                        : system_placement == SystemPlacement::kLastUser && last_user + 1 == messages.size()
                            ? last_user
                            : messages.size();
  std::string out;
  if (system_placement == SystemPlacement::kOwnTurn && (!system_text.empty() || !system_preamble.empty()))
    out += Fill(system, system_preamble + clean(system_text));
  Check(system_placement != SystemPlacement::kFirstUser || system_text.empty() || joined < messages.size(),
        "chat format ", name, ": a system message needs a user message to join");
  for (size_t i = first; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    std::string content = clean(m.content);
    if (i == joined && !system_text.empty()) content = system_text + system_separator + content;
    out += Fill(m.role == "user" ? user : assistant, content);
  }
  if (add_generation_prompt) out += generation;
  return out;
}

std::vector<int64_t> ChatFormat::Encode(const Tokenizer& tokenizer, const std::vector<ChatMessage>& messages,
                                        bool add_generation_prompt) const {
  const std::string text = Render(messages, add_generation_prompt);
  if (IsNone()) return tokenizer.EncodeWithSpecialTokens(text);
  std::vector<int64_t> ids;
  if (bos && tokenizer.BosId() >= 0) ids.push_back(tokenizer.BosId());
  const std::vector<int64_t> rest = tokenizer.Encode(text, /*add_bos=*/false, /*add_eos=*/false);
  ids.insert(ids.end(), rest.begin(), rest.end());
  return ids;
}

std::vector<int64_t> ChatFormat::EncodePrompt(const Tokenizer& tokenizer, const std::string& user_text,
                                              const std::string& system_text) const {
  std::vector<ChatMessage> messages;
  if (!system_text.empty()) messages.push_back({"system", system_text});
  messages.push_back({"user", user_text});
  return Encode(tokenizer, messages, /*add_generation_prompt=*/true);
}

std::vector<int64_t> ChatFormat::EncodeAnswer(const Tokenizer& tokenizer, const std::string& answer) const {
  if (IsNone()) return tokenizer.Encode(answer, /*add_bos=*/false, /*add_eos=*/true);
  std::vector<int64_t> ids = tokenizer.Encode(trim ? Trim(answer) : answer, false, false);
  ids.push_back(StopTokenIds(tokenizer).front());
  return ids;
}

std::vector<int64_t> ChatFormat::StopTokenIds(const Tokenizer& tokenizer) const {
  std::vector<int64_t> ids;
  for (const std::string& s : stop) {
    const int64_t id = tokenizer.PieceToId(s);
    Check(id >= 0 && id < tokenizer.VocabSize() && tokenizer.IdToPiece(id) == s, "chat format ", name,
          ": the stop string '", s, "' is not a token of the tokenizer '", tokenizer.Source(), "'");
    ids.push_back(id);
  }
  for (int64_t id : tokenizer.EosIds())
    if (std::find(ids.begin(), ids.end(), id) == ids.end()) ids.push_back(id);
  return ids;
}

json ChatFormat::ToJson() const {
  json out = {{"name", name}};
  if (IsNone()) return out;
  out["bos"] = bos;
  out["system"] = system;
  out["user"] = user;
  out["assistant"] = assistant;
  out["generation"] = generation;
  out["default_system"] = default_system;
  out["stop"] = stop;
  return out;
}

}  // namespace slm::text
