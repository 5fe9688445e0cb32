// Chat formats against transformers: the chat templates of tests/parity/chat_templates.py
// (Llama 3 and 3.1, Qwen2.5, SmolLM2, Mistral v0.2 and v0.3, Gemma 2) are recognised as their
// built-in format, and each test conversation renders to exactly the text apply_chat_template
// gives (references from make_family_references.py; slm leaves BOS to the tokenizer's id, so the
// BOS string is put back for the comparison).
#include <gtest/gtest.h>

#include <cstdio>
#include <nlohmann/json.hpp>

#include "core/fs.h"
#include "tests/parity/parity_util.h"
#include "text/chat_format.h"

namespace slm::text {
namespace {

TEST(ChatFormatParity, RendersWhatApplyChatTemplateRenders) {
  const nlohmann::json references = fs::ReadJson(parity::ParityDir() + "/qwen2_chat/chat_references.json");
  int compared = 0;
  for (auto it = references.begin(); it != references.end(); ++it) {
    const nlohmann::json& entry = it.value();
    const std::optional<ChatFormat> format = ChatFormat::Recognize(entry["template"].get<std::string>());
    ASSERT_TRUE(format.has_value()) << it.key();
    EXPECT_EQ(format->name, entry["format"]) << it.key();
    const std::string bos = entry["bos"].is_null() ? "" : entry["bos"].get<std::string>();
    EXPECT_EQ(format->bos, !bos.empty()) << it.key();
    for (const nlohmann::json& conversation : entry["conversations"]) {
      std::vector<ChatMessage> messages;
      for (const nlohmann::json& m : conversation["messages"]) messages.push_back({m["role"], m["content"]});
      const std::string ours = (format->bos ? bos : "") + format->Render(messages, conversation["generation"]);
      EXPECT_EQ(ours, conversation["text"].get<std::string>()) << it.key() << ": " << conversation["messages"].dump();
      ++compared;
    }
  }
  std::printf("parity chat formats: %d conversations over %zu templates rendered as apply_chat_template does\n",
              compared, references.size());
  EXPECT_GE(compared, 25);
}

}  // namespace
}  // namespace slm::text
