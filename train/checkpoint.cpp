#include "train/checkpoint.h"

#include <ATen/CPUGeneratorImpl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/checksum.h"
#include "core/error.h"
#include "core/fs.h"
#include "core/log.h"
#include "core/safetensors.h"

namespace slm::train {
namespace {

namespace stdfs = std::filesystem;
using nlohmann::json;

std::string StepName(int64_t step) {
  char name[32];
  std::snprintf(name, sizeof(name), "step-%06lld", static_cast<long long>(step));
  return name;
}

// Files under `dir`, relative, sorted (the manifest itself excluded).
std::vector<std::string> Files(const std::string& dir) {
  std::vector<std::string> files;
  for (const auto& entry : stdfs::recursive_directory_iterator(dir))
    if (entry.is_regular_file()) {
      const std::string rel = stdfs::relative(entry.path(), dir).string();
      if (rel != "SHA256SUMS") files.push_back(rel);
    }
  std::sort(files.begin(), files.end());
  return files;
}

}  // namespace

std::string SaveCheckpoint(const std::string& run_dir, const TrainingState& state,
                           const adapters::MultimodalLMImpl& model,
                           torch::optim::Optimizer& optimizer, int64_t keep) {
  const std::string root = run_dir + "/checkpoints";
  fs::MakeDirs(root);
  const std::string name = StepName(state.step);
  const std::string final_dir = root + "/" + name;
  const std::string tmp = root + "/." + name + ".tmp-" + std::to_string(::getpid());
  stdfs::remove_all(tmp);
  try {
    fs::MakeDirs(tmp);
    model.SaveAdapters(tmp + "/adapters");
    {
      // torch::save writes in place; write to a side name and rename so a full disk is an error.
      const std::string path = tmp + "/optimizer.pt";
      torch::save(optimizer, path);
      Check(stdfs::file_size(path) > 0, "writing '", path, "' failed");
    }
    auto generator = at::detail::getDefaultCPUGenerator();
    safetensors::Save(tmp + "/rng.safetensors", {{"cpu", generator.get_state()}});
    fs::AtomicWriteString(tmp + "/state.json", state.ToJson().dump(2) + "\n");
    std::string sums;
    for (const std::string& file : Files(tmp)) sums += Sha256File(tmp + "/" + file) + "  " + file + "\n";
    fs::AtomicWriteString(tmp + "/SHA256SUMS", sums);
    // Re-saving a step (a resumed run reaching it again) replaces the old directory only now.
    const std::string old = root + "/." + name + ".old-" + std::to_string(::getpid());
    if (stdfs::exists(final_dir)) stdfs::rename(final_dir, old);
    stdfs::rename(tmp, final_dir);
    stdfs::remove_all(old);
  } catch (const std::exception& e) {
    std::error_code ignored;
    stdfs::remove_all(tmp, ignored);
    throw Error(Str("saving checkpoint ", final_dir, " failed (the previous checkpoint is intact): ", e.what()));
  }
  fs::AtomicWriteString(root + "/latest", name + "\n");
  // Keep the newest `keep` step directories.
  std::vector<std::string> steps;
  for (const auto& entry : stdfs::directory_iterator(root)) {
    const std::string n = entry.path().filename().string();
    if (entry.is_directory() && n.rfind("step-", 0) == 0) steps.push_back(n);
  }
  std::sort(steps.begin(), steps.end());
  for (size_t i = 0; keep > 0 && i + static_cast<size_t>(keep) < steps.size(); ++i)
    if (steps[i] != name) stdfs::remove_all(root + "/" + steps[i]);
  return final_dir;
}

std::string LatestCheckpoint(const std::string& run_dir) {
  const std::string pointer = run_dir + "/checkpoints/latest";
  if (!stdfs::exists(pointer)) return "";
  std::string name = fs::ReadFile(pointer);
  while (!name.empty() && (name.back() == '\n' || name.back() == ' ')) name.pop_back();
  Check(name.rfind("step-", 0) == 0 && name.find('/') == std::string::npos, pointer,
        ": does not name a checkpoint (\"", name, "\")");
  const std::string dir = run_dir + "/checkpoints/" + name;
  Check(stdfs::is_directory(dir), pointer, " names '", name, "', which does not exist");
  return dir;
}

TrainingState LoadCheckpoint(const std::string& dir, adapters::MultimodalLMImpl& model,
                             torch::optim::Optimizer* optimizer) {
  const std::string sums_path = dir + "/SHA256SUMS";
  Check(stdfs::is_regular_file(sums_path), dir, ": no SHA256SUMS (a partial checkpoint?)");
  std::istringstream sums(fs::ReadFile(sums_path));
  std::string line;
  std::vector<std::string> listed;
  while (std::getline(sums, line)) {
    if (line.empty()) continue;
    const size_t gap = line.find("  ");
    Check(gap == 64, sums_path, ": malformed line \"", line, "\"");
    const std::string file = line.substr(gap + 2);
    const std::string path = dir + "/" + file;
    Check(stdfs::is_regular_file(path), dir, ": '", file, "' is listed in SHA256SUMS but missing");
    Check(Sha256File(path) == line.substr(0, 64), dir, ": '", file,
          "' does not match its SHA-256 in SHA256SUMS (corrupt checkpoint)");
    listed.push_back(file);
  }
  std::sort(listed.begin(), listed.end());
  Check(listed == Files(dir), dir, ": SHA256SUMS does not list exactly the checkpoint's files");
  const TrainingState state = TrainingState::FromJson(fs::ReadJson(dir + "/state.json"), dir + "/state.json");
  model.LoadAdapters(dir + "/adapters");
  if (optimizer != nullptr) {
    torch::load(*optimizer, dir + "/optimizer.pt");
    safetensors::Reader rng(dir + "/rng.safetensors");
    auto generator = at::detail::getDefaultCPUGenerator();
    generator.set_state(rng.Get("cpu"));
  }
  return state;
}

}  // namespace slm::train
