// Chat formats: how an instruct checkpoint wants a conversation laid out as text, and which
// tokens end the assistant's turn. Adapter prompts ("<speech> Transcribe:") become the user turn
// of a one-turn conversation, and training targets end with the format's stop token, so an
// adapter trained on an instruct backbone talks to it the way it was tuned.
//
// Built in: the layouts of the supported families' instruct templates (we do not run Jinja):
//   llama3   <|start_header_id|>{role}<|end_header_id|>\n\n{content}<|eot_id|>; BOS first;
//            content trimmed; stop <|eot_id|>. Templates that stamp a knowledge/today date into
//            the system turn (Llama 3.1/3.2) get it with transformers' fixed fallback date.
//   chatml   <|im_start|>{role}\n{content}<|im_end|>\n (Qwen2/2.5/3, SmolLM2); stop <|im_end|>;
//            the default system message a template inserts (Qwen2.5's "You are Qwen, ...") is
//            taken from the template text.
//   mistral  BOS [INST] {user}[/INST] {answer}</s> (v0.3; v0.1/v0.2's " [/INST]" and unspaced
//            answers when the template has them); a system message joins the last user turn.
//   gemma    BOS <start_of_turn>user\n{content}<end_of_turn>\n<start_of_turn>model\n; content
//            trimmed; a system message joins the first user turn (Gemma 3's rule; Gemma 2's
//            template refuses system messages); stop <end_of_turn>.
//   none     no layout: the prompt is the user text, encoded with the tokenizer's own special
//            tokens (EncodeWithSpecialTokens), and a target ends with EOS (base checkpoints).
// Recognised from tokenizer_config.json's "chat_template" by substrings of the known templates
// (Recognize), overridable by name, or given in full as a custom format (FromConfig).
//
// BOS is not part of the rendered text: Encode() puts the tokenizer's BOS id first when the format
// starts with BOS (a sentencepiece tokenizer does not match "<s>" written in text).
//
// Errors: slm::Error naming the file or config key (an unrecognised template says how to set
// model.chat_format; an unknown placeholder in a custom format names the key and placeholder; a
// stop string that is not one token of the tokenizer names the string).
// Thread-safety: a ChatFormat is a plain value.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "core/config.h"

namespace slm::text {

class Tokenizer;

struct ChatMessage {
  std::string role;     // "system", "user" or "assistant"
  std::string content;  // inserted verbatim ("<speech>" / "<image>" markers stay markers)
};

struct ChatFormat {
  // Where a system message goes when the format has no system turn of its own.
  enum class SystemPlacement { kOwnTurn, kFirstUser, kLastUser };

  std::string name = "none";  // a built-in name, or "custom"
  bool bos = false;           // the conversation starts with the tokenizer's BOS
  // Turn templates with the placeholder "{content}".
  std::string system, user, assistant;
  std::string generation;  // opens the assistant's turn (add_generation_prompt)
  SystemPlacement system_placement = SystemPlacement::kOwnTurn;
  std::string system_separator = "\n\n";  // between a joined system message and the user text
  std::string default_system;    // used when the conversation has no system message ("" = none)
  std::string system_preamble;   // always emitted first in the system turn (Llama 3.1 dates)
  bool trim = false;             // strip whitespace around each message's content
  std::vector<std::string> stop;  // strings that end an assistant turn; stop[0] ends targets

  bool IsNone() const { return name == "none"; }

  // The conversation as text (without BOS; see the header comment). add_generation_prompt opens
  // the assistant's turn after the last message. slm::Error for an unknown role, or for a
  // non-"none" format given a system message after the first one. The "none" format joins the
  // contents with newlines.
  std::string Render(const std::vector<ChatMessage>& messages, bool add_generation_prompt) const;
  // Ids of a rendered conversation: BOS when the format starts with one (and the tokenizer has
  // one), then the text with added tokens matched. "none": EncodeWithSpecialTokens of the text.
  std::vector<int64_t> Encode(const Tokenizer& tokenizer, const std::vector<ChatMessage>& messages,
                              bool add_generation_prompt) const;
  // A one-turn prompt: the user's text (and an optional system message) with the assistant's
  // turn opened.
  std::vector<int64_t> EncodePrompt(const Tokenizer& tokenizer, const std::string& user_text,
                                    const std::string& system_text = "") const;
  // What the assistant must produce: the answer's ids then the stop token ("none": EOS).
  std::vector<int64_t> EncodeAnswer(const Tokenizer& tokenizer, const std::string& answer) const;
  // Ids that end the assistant's turn: each stop string as one token of `tokenizer`, then the
  // tokenizer's EOS ids (empty for "none" without EOS). slm::Error naming a stop string the
  // tokenizer does not hold as one token.
  std::vector<int64_t> StopTokenIds(const Tokenizer& tokenizer) const;
  nlohmann::json ToJson() const;

  // "none", "llama3", "chatml", "mistral", "gemma".
  static const std::vector<std::string>& BuiltinNames();
  // slm::Error naming `where` and the valid names.
  static ChatFormat Builtin(const std::string& name, const std::string& where);
  // The built-in format a Jinja chat template is, from substrings of the known templates (and
  // the variant details they carry: default system text, Mistral spacing, Llama 3.1 dates);
  // nullopt when it is none of them.
  static std::optional<ChatFormat> Recognize(const std::string& chat_template);
  // The format of a model directory: its tokenizer_config.json "chat_template" (a string, or a
  // list of {name, template} from which "default" is used); "none" when the directory declares no
  // template. slm::Error naming the file when the template is not recognised, telling to set
  // `setting_key` to a built-in name or a custom format.
  static ChatFormat FromModelDir(const std::string& model_dir, const std::string& setting_key);
  // "auto" = FromModelDir, else Builtin(setting).
  static ChatFormat Resolve(const std::string& setting, const std::string& model_dir, const std::string& setting_key);
  // A custom format from a config map: keys bos, system, user, assistant, generation,
  // system_placement (own_turn | first_user | last_user), system_separator, default_system,
  // trim, stop (required, a non-empty list). slm::Error naming the key for a template without
  // {content} or with an unknown placeholder ("{name}" other than {content}).
  static ChatFormat FromConfig(config::Node node);
};

}  // namespace slm::text
