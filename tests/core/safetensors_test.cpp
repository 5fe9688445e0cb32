#include "core/safetensors.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <fstream>

#include "core/fs.h"
#include "tests/test_util.h"

namespace slm::safetensors {
namespace {

// Writes a raw safetensors file from a header string and a data block.
void WriteRaw(const std::string& path, const std::string& header, const std::string& data,
              int64_t declared_length = -1) {
  std::ofstream out(path, std::ios::binary);
  uint64_t n = declared_length >= 0 ? static_cast<uint64_t>(declared_length) : header.size();
  for (int i = 0; i < 8; ++i) out.put(static_cast<char>((n >> (8 * i)) & 0xff));
  out << header << data;
}

TEST(Safetensors, RoundTripAllDtypesAndMetadata) {
  testing::TempDir dir;
  const std::string path = dir.File("m.safetensors");
  std::vector<std::pair<std::string, torch::Tensor>> tensors = {
      {"w.f32", torch::randn({3, 4})},
      {"w.f16", torch::randn({5}).to(torch::kHalf)},
      {"w.bf16", torch::randn({2, 2, 2}).to(torch::kBFloat16)},
      {"ids.i64", torch::arange(7, torch::kLong)},
      {"scalar", torch::tensor(3.5f)},
      {"empty", torch::zeros({0, 4})},
      {"strided", torch::randn({4, 6}).t()},  // non-contiguous input is written contiguously
  };
  Save(path, tensors, {{"format", "pt"}});
  Reader reader(path);
  EXPECT_EQ(reader.Tensors().size(), tensors.size());
  EXPECT_EQ(reader.Metadata().at("format"), "pt");
  for (const auto& [name, t] : tensors) {
    const torch::Tensor back = reader.Get(name);
    EXPECT_EQ(back.scalar_type(), t.scalar_type()) << name;
    EXPECT_EQ(back.sizes(), t.sizes()) << name;
    EXPECT_TRUE(torch::equal(back, t.contiguous())) << name;
  }
  EXPECT_EQ(reader.Info("w.bf16").dtype, "BF16");
  EXPECT_EQ(reader.Info("w.f32").shape, (std::vector<int64_t>{3, 4}));
}

TEST(Safetensors, TensorsOutliveTheReaderAndWritesDoNotReachTheFile) {
  testing::TempDir dir;
  const std::string path = dir.File("m.safetensors");
  Save(path, {{"a", torch::ones({16})}});
  torch::Tensor a;
  {
    Reader reader(path);
    a = reader.Get("a");
  }
  EXPECT_FLOAT_EQ(a.sum().item<float>(), 16.0f);  // mapping kept alive by the tensor
  a.mul_(2);
  Reader again(path);
  EXPECT_FLOAT_EQ(again.Get("a").sum().item<float>(), 16.0f);  // copy-on-write
}

// CopyInto converts like copy_ and gives the tensor's pages back to the kernel: the values are
// still right when read again (re-faulted from the file), for every tensor, page-spanning or not.
TEST(Safetensors, CopyIntoConvertsAndLeavesTheFileReadable) {
  testing::TempDir dir;
  const std::string path = dir.File("big.safetensors");
  const torch::Tensor a = torch::randn({3, 50000}), b = torch::arange(7, torch::kInt), c = torch::randn({70000});
  safetensors::Save(path, {{"a", a}, {"b", b}, {"c", c}});
  safetensors::Reader reader(path);
  for (int round = 0; round < 2; ++round) {
    torch::Tensor da = torch::empty({3, 50000}, torch::kDouble), db = torch::empty({7}, torch::kLong),
                  dc = torch::empty({70000});
    reader.CopyInto("a", da);
    reader.CopyInto("b", db);
    reader.CopyInto("c", dc);
    EXPECT_TRUE(torch::equal(da, a.to(torch::kDouble)));
    EXPECT_TRUE(torch::equal(db, b.to(torch::kLong)));
    EXPECT_TRUE(torch::equal(dc, c));
    EXPECT_TRUE(torch::equal(reader.Get("a"), a));
  }
  torch::Tensor wrong = torch::empty({2, 2});
  EXPECT_ANY_THROW(reader.CopyInto("a", wrong));
  EXPECT_SLM_ERROR(reader.CopyInto("nope", wrong), "nope");
}

TEST(Safetensors, HeaderIsPaddedToEightBytes) {
  testing::TempDir dir;
  const std::string path = dir.File("m.safetensors");
  Save(path, {{"x", torch::ones({1})}});
  const std::string bytes = fs::ReadFile(path);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(bytes[i]);
  EXPECT_EQ((8 + n) % 8, 0u);
}

TEST(Safetensors, TruncatedFiles) {
  testing::TempDir dir;
  const std::string path = dir.File("t.safetensors");
  std::ofstream(path, std::ios::binary) << "abc";
  EXPECT_SLM_ERROR(Reader r(path), "truncated: 3 bytes");
  WriteRaw(path, R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", "1234");
  EXPECT_SLM_ERROR(Reader r(path), "tensor 'a': data_offsets [0, 8] point outside the data block of 4 bytes");
  WriteRaw(path, R"({"a":{})", "", 1000);
  EXPECT_SLM_ERROR(Reader r(path), "truncated: header length 1000");
}

TEST(Safetensors, OversizedHeaderIsRefusedBeforeReading) {
  testing::TempDir dir;
  const std::string path = dir.File("h.safetensors");
  WriteRaw(path, "{}", "", int64_t{1} << 40);
  EXPECT_SLM_ERROR(Reader r(path), "exceeds the limit");
  WriteRaw(path, std::string(64, ' ') + "{}", "");
  ReaderOptions small;
  small.max_header_bytes = 16;
  EXPECT_SLM_ERROR(Reader r(path, small), "header length 66 exceeds the limit of 16 bytes");
}

TEST(Safetensors, OverlappingHolesAndTrailingBytes) {
  testing::TempDir dir;
  const std::string path = dir.File("o.safetensors");
  WriteRaw(path,
           R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
           R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
           std::string(12, '\0'));
  EXPECT_SLM_ERROR(Reader r(path), "tensors 'a' and 'b' overlap");
  WriteRaw(path, R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", std::string(8, '\0'));
  EXPECT_SLM_ERROR(Reader r(path), "hole of 4 bytes before tensor 'a'");
  WriteRaw(path, R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", std::string(8, '\0'));
  EXPECT_SLM_ERROR(Reader r(path), "4 bytes not covered");
}

TEST(Safetensors, MalformedEntries) {
  testing::TempDir dir;
  const std::string path = dir.File("m.safetensors");
  WriteRaw(path, "not json", "");
  EXPECT_SLM_ERROR(Reader r(path), "header is not valid JSON");
  WriteRaw(path, R"({"a":{"dtype":"Q4","shape":[1],"data_offsets":[0,4]}})", std::string(4, '\0'));
  EXPECT_SLM_ERROR(Reader r(path), "tensor 'a': unsupported safetensors dtype 'Q4'");
  WriteRaw(path, R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,4]}})", std::string(4, '\0'));
  EXPECT_SLM_ERROR(Reader r(path), "shape needs 3 x 4 bytes but data_offsets span 4");
  WriteRaw(path, R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", std::string(4, '\0'));
  EXPECT_SLM_ERROR(Reader r(path), "non-negative integers");
  WriteRaw(path, R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[8,4]}})", std::string(8, '\0'));
  EXPECT_SLM_ERROR(Reader r(path), "reversed");
  WriteRaw(path,
           R"({"a":{"dtype":"F32","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,4]}})",
           std::string(4, '\0'));
  EXPECT_SLM_ERROR(Reader r(path), "overflows");
  WriteRaw(path, R"([1,2])", "");
  EXPECT_SLM_ERROR(Reader r(path), "not a JSON object");
  EXPECT_SLM_ERROR(Reader r(dir.File("missing.safetensors")), "cannot open");
}

// Fuzz finding (fuzz/regressions/safetensors/): an empty tensor whose data is not aligned was
// copied with memcpy from a null destination (UBSan); it reads as an empty tensor.
TEST(Safetensors, EmptyTensorAtAnUnalignedOffset) {
  testing::TempDir dir;
  const std::string path = dir.File("e.safetensors");
  std::string header = R"({"e":{"dtype":"F32","shape":[0,4],"data_offsets":[0,0]},"x":{"dtype":"I32","shape":[1],"data_offsets":[0,4]}})";
  while ((8 + header.size()) % 4 != 1) header += ' ';  // the data block starts misaligned
  WriteRaw(path, header, std::string("\x07\0\0\0", 4));
  Reader reader(path);
  const torch::Tensor e = reader.Get("e");
  EXPECT_EQ(e.sizes().vec(), (std::vector<int64_t>{0, 4}));
  EXPECT_EQ(reader.Get("x").item<int32_t>(), 7);
}

TEST(Safetensors, UnknownTensorNameAndBadSaves) {
  testing::TempDir dir;
  const std::string path = dir.File("m.safetensors");
  Save(path, {{"a", torch::ones({2})}});
  Reader reader(path);
  EXPECT_SLM_ERROR(reader.Get("b"), "no tensor named 'b'");
  EXPECT_SLM_ERROR(Save(path, {{"a", torch::ones({1})}, {"a", torch::ones({1})}}),
                   "duplicate tensor name 'a'");
  EXPECT_SLM_ERROR(Save(path, {{"c", torch::ones({1}, torch::kComplexFloat)}}), "cannot be stored");
  // A failed save leaves the previous file intact.
  Reader still(path);
  EXPECT_TRUE(still.Has("a"));
}

TEST(Safetensors, FailedWriteLeavesTheOldFile) {
  testing::TempDir dir;
  const std::string path = dir.File("m.safetensors");
  Save(path, {{"a", torch::ones({2})}});
  EXPECT_THROW(Save(dir.File("no/such/dir/m.safetensors"), {{"a", torch::ones({2})}}), slm::Error);
  EXPECT_TRUE(Reader(path).Has("a"));
}


// One module's parameters against files that differ from it in each way a loader reports.
TEST(Safetensors, PlanReportsEveryMismatchAndLoadsOnlyWhenAllCheckOut) {
  testing::TempDir dir;
  torch::nn::Linear module(3, 2);
  const torch::Tensor weight = torch::arange(6, torch::kFloat).reshape({2, 3});
  const torch::Tensor bias = torch::tensor({7.0f, 8.0f});
  auto plan_for = [&] {
    Plan plan;
    plan.ExpectParameters(*module, [](const std::string& name) { return "proj." + name; });
    plan.tensors.push_back({"extra.scale", {1}, torch::kLong, {}, /*optional=*/true});
    plan.missing_hint = " (hint)";
    return plan;
  };
  auto load = [&](const std::vector<std::pair<std::string, torch::Tensor>>& tensors) {
    Save(dir.File("m.safetensors"), tensors);
    Checkpoint::File(dir.File("m.safetensors")).Load(plan_for());
  };
  const torch::Tensor before = module->weight.detach().clone();
  EXPECT_SLM_ERROR(load({{"proj.weight", weight}}), "m.safetensors: missing tensor 'proj.bias' (hint)");
  EXPECT_SLM_ERROR(load({}), "missing tensors 'proj.weight', 'proj.bias' (hint)");
  EXPECT_SLM_ERROR(load({{"proj.weight", weight}, {"proj.bias", bias}, {"other", bias}}),
                   "m.safetensors: unexpected tensor 'other'");
  EXPECT_SLM_ERROR(load({{"proj.weight", weight.t().contiguous()}, {"proj.bias", bias}}),
                   "tensor 'proj.weight' has shape [3, 2], expected [2, 3]");
  EXPECT_SLM_ERROR(load({{"proj.weight", weight.to(torch::kInt)}, {"proj.bias", bias}}),
                   "tensor 'proj.weight' has dtype I32, expected a floating-point one");
  EXPECT_SLM_ERROR(load({{"proj.weight", weight}, {"proj.bias", bias}, {"extra.scale", torch::ones({1})}}),
                   "tensor 'extra.scale' has dtype F32, expected I64");
  EXPECT_TRUE(torch::equal(module->weight, before));  // no failed load changed anything

  // Any floating-point dtype is converted to the destination's; an optional tensor may be absent.
  load({{"proj.weight", weight.to(torch::kBFloat16)}, {"proj.bias", bias}});
  EXPECT_TRUE(torch::equal(module->weight, weight));
  EXPECT_TRUE(torch::equal(module->bias, bias));
  EXPECT_FALSE(module->weight.grad_fn());

  Plan tolerant = plan_for();
  tolerant.ignore = [](const std::string& name) { return name == "other"; };
  Save(dir.File("m.safetensors"), {{"proj.weight", weight}, {"proj.bias", bias}, {"other", bias}});
  const Checkpoint file = Checkpoint::File(dir.File("m.safetensors"));
  file.Verify(tolerant);
  EXPECT_TRUE(torch::equal(file.Get("other"), bias));
  EXPECT_SLM_ERROR(file.Get("nope"), "m.safetensors: no tensor named 'nope'");
}

}  // namespace
}  // namespace slm::safetensors
