// JSONL manifests: one example per line,
//   {"id":"u1","task":"asr","audio":"wav/u1.wav","text":"...","words":[{"word":"the","start":0.0,"end":0.11}]}
//   {"id":"i1","task":"caption","image":"img/i1.png","text":"a red circle above a blue square"}
//   {"id":"q1","task":"sqa","audio":"wav/q1.wav","prompt":"what is a dog","response":"..."}
// Media paths are relative to the manifest's directory (absolute paths are kept). Word times are
// seconds from the start of the audio. Fields this struct does not name are kept in `extra` and
// written back unchanged, so tools can add fields (speaker, duration, attributes, split).
// Generators (audio, vision, text) write manifests; train/ reads them into datasets.
// Thread-safety: free functions without shared state.
#pragma once

#include <nlohmann/json.hpp>

#include <istream>
#include <optional>
#include <string>
#include <vector>

namespace slm::manifest {

struct Word {
  std::string word;
  double start = 0;  // seconds
  double end = 0;    // seconds
};

struct Entry {
  std::string id;
  std::string task;
  std::string audio;  // as written in the manifest (relative or absolute)
  std::string image;
  std::string text;
  std::string prompt;
  std::string response;
  std::vector<Word> words;
  nlohmann::json extra = nlohmann::json::object();
};

nlohmann::json ToJson(const Entry& entry);
// Throws slm::Error naming `where` (e.g. "data/train.jsonl:17") for a missing id/task, wrong types,
// or words whose times are negative, reversed or out of order.
Entry FromJson(const nlohmann::json& json, const std::string& where);

struct Manifest {
  std::string path;  // the file read, or "" for one built in memory
  std::string base_dir;  // directory media paths are relative to
  std::vector<Entry> entries;
  // Absolute (or base-relative) path of an entry's audio / image.
  std::string AudioPath(const Entry& e) const;
  std::string ImagePath(const Entry& e) const;
};

// Reads a manifest; blank lines are skipped; any malformed line is an slm::Error "<file>:<line>: ...".
Manifest Read(const std::string& path);
// The same over a stream: `path` only names the source in messages and gives base_dir.
Manifest Read(std::istream& in, const std::string& path);
// Writes atomically (core/fs.h) one JSON object per line.
void Write(const std::string& path, const std::vector<Entry>& entries);

}  // namespace slm::manifest
