#include "core/fs.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/error.h"

namespace slm::fs {

void AtomicWrite(const std::string& path, const std::function<void(std::FILE*)>& write_body) {
  const std::filesystem::path target(path);
  const std::string temp = path + ".tmp." + std::to_string(getpid());
  std::FILE* file = std::fopen(temp.c_str(), "wb");
  if (!file) throw Error(Str("cannot create '", temp, "': ", std::strerror(errno)));
  auto fail = [&](const std::string& what) {
    const int err = errno;
    std::fclose(file);
    std::remove(temp.c_str());
    throw Error(Str("cannot write '", path, "': ", what, err ? Str(": ", std::strerror(err)) : ""));
  };
  try {
    write_body(file);
  } catch (...) {
    std::fclose(file);
    std::remove(temp.c_str());
    throw;
  }
  errno = 0;
  if (std::fflush(file) != 0 || std::ferror(file)) fail("write failed");
  if (fsync(fileno(file)) != 0) fail("fsync failed");
  if (std::fclose(file) != 0) {
    std::remove(temp.c_str());
    throw Error(Str("cannot write '", path, "': close failed: ", std::strerror(errno)));
  }
  if (std::rename(temp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    std::remove(temp.c_str());
    throw Error(Str("cannot rename '", temp, "' to '", path, "': ", std::strerror(err)));
  }
  const std::string dir = target.has_parent_path() ? target.parent_path().string() : ".";
  const int dfd = open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (dfd >= 0) {
    fsync(dfd);
    close(dfd);
  }
}

void AtomicWriteString(const std::string& path, const std::string& content) {
  AtomicWrite(path, [&](std::FILE* f) {
    if (!content.empty() && std::fwrite(content.data(), 1, content.size(), f) != content.size())
      throw Error(Str("cannot write '", path, "': ", std::strerror(errno)));
  });
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(Str("cannot open '", path, "': ", std::strerror(errno)));
  std::ostringstream buffer;
  buffer << in.rdbuf();
  if (in.bad()) throw Error(Str("cannot read '", path, "'"));
  return buffer.str();
}

nlohmann::json ReadJson(const std::string& path) {
  const std::string text = ReadFile(path);
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw Error(Str(path, ": not valid JSON: ", e.what()));
  }
}

void MakeDirs(const std::string& path) {
  std::error_code ec;
  std::filesystem::create_directories(path, ec);
  if (ec) throw Error(Str("cannot create directory '", path, "': ", ec.message()));
  if (!std::filesystem::is_directory(path))
    throw Error(Str("cannot create directory '", path, "': a file is in the way"));
}

std::string Resolve(const std::string& base_dir, const std::string& path) {
  if (path.empty() || path[0] == '/') return path;
  return (std::filesystem::path(base_dir) / path).lexically_normal().string();
}

}  // namespace slm::fs
