// The safetensors reader (core/safetensors.h) on any bytes, through a file in memory (memfd: the
// reader takes a path and maps it). Input: starting with '{', the JSON header, then optionally a
// NUL byte and the data block (the target adds the 8-byte length, so mutations of the JSON keep
// a consistent frame); anything else is the whole file as it is. Invariants beyond "only
// slm::Error naming the file": every tensor the reader accepts has exactly its declared bytes,
// equal to the file's bytes at its offsets, and Get / Info agree with Tensors().
#include <sys/mman.h>
#include <unistd.h>

#include <torch/torch.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

#include "core/safetensors.h"
#include "fuzz/fuzz_util.h"

namespace {

std::string FileBytes(const uint8_t* data, size_t size) {
  if (size == 0 || data[0] != '{') return std::string(reinterpret_cast<const char*>(data), size);
  const auto* nul = static_cast<const uint8_t*>(std::memchr(data, 0, size));
  const size_t header = nul ? static_cast<size_t>(nul - data) : size;
  std::string file(8, '\0');
  for (int i = 0; i < 8; ++i) file[i] = static_cast<char>((uint64_t(header) >> (8 * i)) & 0xff);
  file.append(reinterpret_cast<const char*>(data), header);
  if (nul) file.append(reinterpret_cast<const char*>(nul + 1), size - header - 1);
  return file;
}

int MemoryFile() {
  static const int fd = memfd_create("safetensors-fuzz", MFD_CLOEXEC);
  if (fd < 0) slm::fuzz::Finding("memfd_create failed");
  return fd;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string file = FileBytes(data, size);
  const int fd = MemoryFile();
  if (ftruncate(fd, 0) != 0 || pwrite(fd, file.data(), file.size(), 0) != ssize_t(file.size()))
    slm::fuzz::Finding("cannot write the memfd");
  const std::string path = "/proc/self/fd/" + std::to_string(fd);
  slm::fuzz::ExpectCleanRejection(path, [&] {
    slm::safetensors::Reader reader(path);
    uint64_t header = 0;
    for (int i = 7; i >= 0; --i) header = (header << 8) | static_cast<uint8_t>(file[i]);
    const char* block = file.data() + 8 + header;
    for (const auto& info : reader.Tensors()) {
      SLM_FUZZ_ASSERT(reader.Has(info.name) && &reader.Info(info.name) == &info, info.name);
      const torch::Tensor t = reader.Get(info.name);
      SLM_FUZZ_ASSERT(t.scalar_type() == info.scalar_type && t.sizes().vec() == info.shape, info.name);
      const uint64_t bytes = uint64_t(t.numel()) * t.element_size();
      SLM_FUZZ_ASSERT(bytes == info.end - info.begin, info.name);
      SLM_FUZZ_ASSERT(8 + header + info.end <= file.size(), info.name);
      SLM_FUZZ_ASSERT(bytes == 0 || std::memcmp(t.data_ptr(), block + info.begin, bytes) == 0,
                      info.name);
    }
    (void)reader.Info(std::string("\x01not a tensor"));  // must throw naming the file
    slm::fuzz::Finding("Info() of an absent tensor returned");
  });
  return 0;
}
