#include "core/checksum.h"

#include <openssl/evp.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <vector>

#include "core/error.h"

namespace slm {
namespace {

struct Digest {
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx{EVP_MD_CTX_new(), EVP_MD_CTX_free};
  Digest() {
    Check(ctx != nullptr && EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) == 1,
          "SHA-256: OpenSSL initialisation failed");
  }
  void Update(const void* data, size_t size) { EVP_DigestUpdate(ctx.get(), data, size); }
  std::string Hex() {
    unsigned char out[EVP_MAX_MD_SIZE];
    unsigned int length = 0;
    EVP_DigestFinal_ex(ctx.get(), out, &length);
    static const char* digits = "0123456789abcdef";
    std::string hex;
    for (unsigned int i = 0; i < length; ++i) {
      hex.push_back(digits[out[i] >> 4]);
      hex.push_back(digits[out[i] & 15]);
    }
    return hex;
  }
};

}  // namespace

std::string Sha256File(const std::string& path) {
  std::unique_ptr<std::FILE, decltype(&std::fclose)> file(std::fopen(path.c_str(), "rb"), std::fclose);
  Check(file != nullptr, "cannot read '", path, "': ", std::strerror(errno));
  Digest digest;
  std::vector<char> buffer(1 << 20);
  size_t n = 0;
  while ((n = std::fread(buffer.data(), 1, buffer.size(), file.get())) > 0) digest.Update(buffer.data(), n);
  Check(!std::ferror(file.get()), "reading '", path, "' failed");
  return digest.Hex();
}

std::string Sha256(const std::string& bytes) {
  Digest digest;
  digest.Update(bytes.data(), bytes.size());
  return digest.Hex();
}

}  // namespace slm
