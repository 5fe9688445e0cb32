// File-system helpers with crash-safe semantics. Thread-safe (no shared state).
#pragma once

#include <nlohmann/json.hpp>

#include <functional>
#include <string>

namespace slm::fs {

// Writes a file so that readers see either the old content or the complete new content, never a
// partial one: the bytes go to "<path>.tmp.<pid>" in the same directory, are fsync'ed, then renamed
// over `path`, and the directory is fsync'ed. On any failure (disk full, permissions) the temporary
// file is removed, `path` is untouched and slm::Error names the path and the OS error.
void AtomicWrite(const std::string& path, const std::function<void(std::FILE*)>& write_body);
void AtomicWriteString(const std::string& path, const std::string& content);

// Whole file as bytes; slm::Error naming the path if it cannot be read.
std::string ReadFile(const std::string& path);

// A JSON file, parsed. slm::Error naming the path when it cannot be read ("cannot open ...") or
// parsed ("<path>: not valid JSON: ...").
nlohmann::json ReadJson(const std::string& path);

// Creates the directory and its parents; slm::Error if that fails or a file is in the way.
void MakeDirs(const std::string& path);

// Joins a manifest-relative path: absolute paths stay as they are.
std::string Resolve(const std::string& base_dir, const std::string& path);

}  // namespace slm::fs
