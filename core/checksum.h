// SHA-256 of files (OpenSSL's EVP), for checkpoint manifests: a checkpoint whose files do not match
// its recorded digests is corrupt or partial. Thread-safe.
#pragma once

#include <string>

namespace slm {

// Lower-case hex digest of the file's bytes; slm::Error naming the path if it cannot be read.
std::string Sha256File(const std::string& path);
// Of a string (tests, small records).
std::string Sha256(const std::string& bytes);

}  // namespace slm
