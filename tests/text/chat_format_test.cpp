// Chat formats (text/chat_format.h): the built-in layouts, recognition of chat templates, custom
// formats from a config and their errors, and encoding with a tokenizer.json tokenizer that has no
// BOS (Qwen style). Rendering against transformers' apply_chat_template is checked in
// tests/parity/chat_format_parity_test.cpp.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "core/config.h"
#include "tests/test_util.h"
#include "tests/text/chatml_tokenizer.h"
#include "text/chat_format.h"
#include "text/tokenizer.h"

namespace slm::text {
namespace {

using nlohmann::json;
using testing::WriteChatmlTokenizer;

TEST(ChatFormat, BuiltinsRenderTheirLayouts) {
  const std::vector<ChatMessage> chat = {{"user", "<speech> Transcribe:"}};
  EXPECT_EQ(ChatFormat::Builtin("chatml", "k").Render(chat, true),
            "<|im_start|>user\n<speech> Transcribe:<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(ChatFormat::Builtin("llama3", "k").Render({{"system", " Be brief. "}, {"user", " hi "}}, true),
            "<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|><|start_header_id|>user<|end_header_id|>"
            "\n\nhi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n");
  EXPECT_EQ(ChatFormat::Builtin("mistral", "k").Render({{"system", "S"}, {"user", "q"}}, true), "[INST] S\n\nq[/INST]");
  EXPECT_EQ(ChatFormat::Builtin("gemma", "k").Render({{"system", "S"}, {"user", "q"}, {"assistant", "a"}}, false),
            "<start_of_turn>user\nS\n\nq<end_of_turn>\n<start_of_turn>model\na<end_of_turn>\n");
  EXPECT_EQ(ChatFormat::Builtin("none", "k").Render(chat, true), "<speech> Transcribe:");
  EXPECT_TRUE(ChatFormat::Builtin("gemma", "k").bos);
  EXPECT_FALSE(ChatFormat::Builtin("chatml", "k").bos);
  EXPECT_SLM_ERROR(ChatFormat::Builtin("chatlm", "model.chat_format"),
                   "model.chat_format: unknown chat format 'chatlm' (valid: auto, none, llama3, chatml, mistral, "
                   "gemma); did you mean 'chatml'?");
  EXPECT_SLM_ERROR(ChatFormat::Builtin("chatml", "k").Render({{"tool", "x"}}, true),
                   "message 0 has role 'tool' (valid: system, user, assistant)");
  EXPECT_SLM_ERROR(ChatFormat::Builtin("chatml", "k").Render({{"user", "x"}, {"system", "y"}}, true),
                   "a system message must come first (message 1)");
}

TEST(ChatFormat, RecognisesTemplatesBySubstrings) {
  EXPECT_EQ(ChatFormat::Recognize("{{ '<|im_start|>' + m + '<|im_end|>' }}")->name, "chatml");
  EXPECT_EQ(ChatFormat::Recognize("<|start_header_id|>...<|eot_id|>")->name, "llama3");
  EXPECT_EQ(ChatFormat::Recognize("{{ '[INST] ' + c + '[/INST]' }}")->user, "[INST] {content}[/INST]");
  EXPECT_EQ(ChatFormat::Recognize("{{ '[INST] ' + c + ' [/INST]' }}")->user, "[INST] {content} [/INST]");
  EXPECT_EQ(ChatFormat::Recognize("<start_of_turn>x<end_of_turn>")->name, "gemma");
  EXPECT_FALSE(ChatFormat::Recognize("{{ '<|user|>' + c + '<|end|>' }}").has_value());
  const auto qwen = ChatFormat::Recognize(
      "{%- else %}{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud.<|im_end|>\\n' }}"
      "{{ '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>' }}");
  EXPECT_EQ(qwen->default_system, "You are Qwen, created by Alibaba Cloud.");
  EXPECT_EQ(qwen->Render({{"user", "hi"}}, false),
            "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n");
  EXPECT_EQ(qwen->Render({{"system", "S"}, {"user", "hi"}}, false),
            "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n");
}

TEST(ChatFormat, ModelDirectoriesAndTheirErrors) {
  slm::testing::TempDir plain, chat, odd, listed;
  EXPECT_EQ(ChatFormat::FromModelDir(plain.path(), "model.chat_format").name, "none");  // no template
  WriteChatmlTokenizer(chat, {{"chat_template", "{{ '<|im_start|>' }}{{ '<|im_end|>' }}"}, {"eos_token", "<|im_end|>"}});
  EXPECT_EQ(ChatFormat::Resolve("auto", chat.path(), "model.chat_format").name, "chatml");
  EXPECT_EQ(ChatFormat::Resolve("gemma", chat.path(), "model.chat_format").name, "gemma");  // overridden
  WriteChatmlTokenizer(odd, {{"chat_template", "{{ '<|user|>' + message['content'] + '<|end|>' }}"}});
  EXPECT_SLM_ERROR(ChatFormat::Resolve("auto", odd.path(), "model.chat_format"),
                   odd.File("tokenizer_config.json") + ": \"chat_template\": the chat template is none slm "
                   "recognises (llama3, chatml, mistral, gemma); set model.chat_format to one of none, llama3, "
                   "chatml, mistral, gemma");
  EXPECT_EQ(ChatFormat::Resolve("chatml", odd.path(), "model.chat_format").name, "chatml");
  WriteChatmlTokenizer(listed, {{"chat_template", json::array({{{"name", "tool_use"}, {"template", "x"}},
                                                               {{"name", "default"}, {"template", "<|im_start|><|im_end|>"}}})}});
  EXPECT_EQ(ChatFormat::FromModelDir(listed.path(), "k").name, "chatml");
  WriteChatmlTokenizer(listed, {{"chat_template", 3}});
  EXPECT_SLM_ERROR(ChatFormat::FromModelDir(listed.path(), "k"), "\"chat_template\" must be a string or a list");
}

TEST(ChatFormat, EncodesWithoutBosAndStopsOnTheTurnEnd) {
  slm::testing::TempDir dir;
  WriteChatmlTokenizer(dir, {{"eos_token", "<|im_end|>"}});
  TokenizerOptions options;
  options.markers = {"<speech>"};
  const Tokenizer tokenizer = Tokenizer::Load(dir.path(), options);
  ASSERT_EQ(tokenizer.BosId(), -1);
  const int64_t start = tokenizer.AddedTokenId("<|im_start|>"), end = tokenizer.AddedTokenId("<|im_end|>");
  const int64_t speech = tokenizer.AddedTokenId("<speech>");
  const ChatFormat chatml = ChatFormat::Builtin("chatml", "k");
  const std::vector<int64_t> prompt = chatml.EncodePrompt(tokenizer, "<speech>ab");
  EXPECT_EQ(prompt.front(), start);  // no BOS: the tokenizer has none
  EXPECT_EQ(std::count(prompt.begin(), prompt.end(), speech), 1);
  EXPECT_EQ(std::count(prompt.begin(), prompt.end(), end), 1);
  EXPECT_EQ(prompt, tokenizer.Encode("<|im_start|>user\n<speech>ab<|im_end|>\n<|im_start|>assistant\n", false, false));
  std::vector<int64_t> answer = tokenizer.Encode("cab", false, false);
  answer.push_back(end);
  EXPECT_EQ(chatml.EncodeAnswer(tokenizer, "cab"), answer);
  EXPECT_EQ(chatml.StopTokenIds(tokenizer), std::vector<int64_t>{end});
  // "none": the tokenizer's own special tokens (none here) and EOS after the answer.
  const ChatFormat none;
  EXPECT_EQ(none.EncodePrompt(tokenizer, "ab"), tokenizer.Encode("ab", false, false));
  EXPECT_EQ(none.EncodeAnswer(tokenizer, "ab").back(), end);
  EXPECT_SLM_ERROR(ChatFormat::Builtin("llama3", "k").StopTokenIds(tokenizer),
                   "chat format llama3: the stop string '<|eot_id|>' is not a token of the tokenizer");
}

TEST(ChatFormat, CustomFormatsFromAConfig) {
  auto load = [](const std::string& yaml) {
    config::Document doc = config::Document::LoadString(yaml, "c.yaml");
    return ChatFormat::FromConfig(doc.Root().Child("chat_format"));
  };
  const ChatFormat phi = load(
      "chat_format:\n  user: \"<|user|>\\n{content}<|end|>\\n\"\n  assistant: \"<|assistant|>\\n{content}<|end|>\\n\"\n"
      "  system: \"<|system|>\\n{content}<|end|>\\n\"\n  generation: \"<|assistant|>\\n\"\n  stop: [\"<|end|>\"]\n");
  EXPECT_EQ(phi.name, "custom");
  EXPECT_EQ(phi.Render({{"system", "S"}, {"user", "q"}}, true), "<|system|>\nS<|end|>\n<|user|>\nq<|end|>\n<|assistant|>\n");
  EXPECT_SLM_ERROR(load("chat_format:\n  user: \"<u>{contnet}\"\n  assistant: \"{content}\"\n  system: \"{content}\"\n"
                        "  stop: [x]\n"),
                   "key 'chat_format.user' unknown placeholder {contnet} (the only placeholder is {content})");
  EXPECT_SLM_ERROR(load("chat_format:\n  user: \"<u>\"\n  assistant: \"{content}\"\n  system: \"{content}\"\n  stop: [x]\n"),
                   "key 'chat_format.user' needs the placeholder {content}");
  EXPECT_SLM_ERROR(load("chat_format:\n  user: \"{content}\"\n  assistant: \"{content}\"\n  stop: [x]\n"),
                   "key 'chat_format.system' is empty: give a system turn, or system_placement first_user");
  EXPECT_SLM_ERROR(load("chat_format:\n  user: \"{content}\"\n  assistant: \"{content}\"\n  system: \"{content}\"\n"),
                   "key 'chat_format.stop'");
  const ChatFormat folded = load("chat_format:\n  user: \"[{content}]\"\n  assistant: \"{content}.\"\n"
                                 "  system_placement: first_user\n  system_separator: \" | \"\n  stop: [x]\n");
  EXPECT_EQ(folded.Render({{"system", "S"}, {"user", "q"}, {"assistant", "a"}}, false), "[S | q]a.");
}

}  // namespace
}  // namespace slm::text
