// slm model inspect DIR [--json]   what a Hugging Face model directory holds (architecture,
//   parameters, dtypes, shards, tokenizer, special tokens, chat format, memory) and whether slm
//   runs it, with every reason when it does not (text/model_inspect.h). Exits 0 either way: the
//   answer is the report; an unreadable DIR is an error.
#include <memory>
#include <string>

#include "cli/command.h"
#include "text/model_inspect.h"

namespace slm::cli {
namespace {

void RunInspect(const std::string& dir, bool json) {
  const text::ModelInspection inspection = text::InspectModel(dir);
  Report report(json);
  for (const std::string& line : inspection.Lines()) report.Line(line);
  const nlohmann::json data = inspection.ToJson();
  if (json)
    for (auto it = data.begin(); it != data.end(); ++it) report.Set(it.key(), it.value());
  report.Emit();
}

Registrar registrar([](CLI::App& app, Common& common) {
  CLI::App* model = Group(app, "model", "multimodal model tools");
  auto* inspect = model->add_subcommand(
      "inspect", "architecture, parameters, dtypes, shards, tokenizer and chat format of a Hugging Face "
                 "model directory, and whether slm supports it");
  auto dir = std::make_shared<std::string>();
  inspect->add_option("dir", *dir, "model directory (config.json, *.safetensors, tokenizer files)")->required();
  inspect->callback([dir, &common] { RunInspect(*dir, common.json); });
});

}  // namespace
}  // namespace slm::cli
