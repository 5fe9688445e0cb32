#include "core/manifest.h"

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "core/fs.h"

namespace slm::manifest {
namespace {
const char* const kKnown[] = {"id", "task", "audio", "image", "text", "prompt", "response", "words"};

std::string GetString(const nlohmann::json& j, const char* key, const std::string& where,
                      bool required) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) {
    Check(!required, where, ": missing field '", key, "'");
    return "";
  }
  Check(it->is_string(), where, ": field '", key, "' must be a string");
  return it->get<std::string>();
}
// Millisecond precision keeps manifests short and is finer than any aligner. Beyond 1e12 s a
// double has no millisecond digits left to round, and x * 1000 could overflow to infinity, which
// JSON writes as null: such a time is written as it is, so the manifest reads back.
double Milliseconds(double seconds) {
  return std::abs(seconds) < 1e12 ? std::round(seconds * 1000.0) / 1000.0 : seconds;
}

}  // namespace

nlohmann::json ToJson(const Entry& e) {
  nlohmann::json j = nlohmann::json::object();
  j["id"] = e.id;
  j["task"] = e.task;
  if (!e.audio.empty()) j["audio"] = e.audio;
  if (!e.image.empty()) j["image"] = e.image;
  if (!e.text.empty()) j["text"] = e.text;
  if (!e.prompt.empty()) j["prompt"] = e.prompt;
  if (!e.response.empty()) j["response"] = e.response;
  if (!e.words.empty()) {
    nlohmann::json words = nlohmann::json::array();
    for (const auto& w : e.words)
      words.push_back({{"word", w.word}, {"start", Milliseconds(w.start)}, {"end", Milliseconds(w.end)}});
    j["words"] = std::move(words);
  }
  for (auto it = e.extra.begin(); it != e.extra.end(); ++it) j[it.key()] = it.value();
  return j;
}

Entry FromJson(const nlohmann::json& j, const std::string& where) {
  Check(j.is_object(), where, ": a manifest line must be a JSON object");
  Entry e;
  e.id = GetString(j, "id", where, true);
  Check(!e.id.empty(), where, ": field 'id' is empty");
  e.task = GetString(j, "task", where, true);
  e.audio = GetString(j, "audio", where, false);
  e.image = GetString(j, "image", where, false);
  e.text = GetString(j, "text", where, false);
  e.prompt = GetString(j, "prompt", where, false);
  e.response = GetString(j, "response", where, false);
  if (auto it = j.find("words"); it != j.end() && !it->is_null()) {
    Check(it->is_array(), where, ": field 'words' must be a list");
    double previous_start = 0;
    for (size_t i = 0; i < it->size(); ++i) {
      const auto& w = (*it)[i];
      const std::string at = Str(where, ": words[", i, "]");
      Check(w.is_object() && w.contains("word") && w["word"].is_string(), at,
            " must be an object with a string 'word'");
      Check(w.contains("start") && w["start"].is_number() && w.contains("end") &&
                w["end"].is_number(),
            at, " ('", w["word"].get<std::string>(), "') needs numeric 'start' and 'end' times");
      Word word{w["word"].get<std::string>(), w["start"].get<double>(), w["end"].get<double>()};
      Check(word.start >= 0 && word.end >= word.start, at, " ('", word.word, "') has times [",
            word.start, ", ", word.end, "]: start must be >= 0 and end >= start");
      Check(word.start >= previous_start, at, " ('", word.word, "') starts at ", word.start,
            " s, before the previous word");
      previous_start = word.start;
      e.words.push_back(std::move(word));
    }
  }
  for (auto it = j.begin(); it != j.end(); ++it) {
    bool known = false;
    for (const char* k : kKnown) known = known || it.key() == k;
    if (!known) e.extra[it.key()] = it.value();
  }
  return e;
}

std::string Manifest::AudioPath(const Entry& e) const { return fs::Resolve(base_dir, e.audio); }
std::string Manifest::ImagePath(const Entry& e) const { return fs::Resolve(base_dir, e.image); }

Manifest Read(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw Error(Str("cannot open manifest '", path, "': ", std::strerror(errno)));
  return Read(in, path);
}

Manifest Read(std::istream& in, const std::string& path) {
  Manifest m;
  m.path = path;
  m.base_dir = std::filesystem::path(path).parent_path().string();
  if (m.base_dir.empty()) m.base_dir = ".";
  std::string line;
  size_t line_number = 0;
  while (std::getline(in, line)) {
    ++line_number;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = Str(path, ":", line_number);
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      throw Error(Str(where, ": invalid JSON: ", e.what()));
    }
    m.entries.push_back(FromJson(j, where));
  }
  return m;
}

void Write(const std::string& path, const std::vector<Entry>& entries) {
  fs::AtomicWrite(path, [&](std::FILE* f) {
    for (const auto& e : entries) {
      const std::string line = ToJson(e).dump() + "\n";
      if (std::fwrite(line.data(), 1, line.size(), f) != line.size())
        throw Error(Str("cannot write manifest '", path, "': ", std::strerror(errno)));
    }
  });
}

}  // namespace slm::manifest
