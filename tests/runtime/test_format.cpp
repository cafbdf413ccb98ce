// The .apot reader: round trip, and clear errors for truncated, corrupted, wrong-version and
// hostile files (offsets and sizes outside the file), never an out-of-bounds read.
#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "apot/runtime/format.h"

using apot::runtime::FormatError;
using apot::runtime::LayerRecord;

namespace {

LayerRecord valid_record() {
  LayerRecord r{};
  r.kind = 1;
  r.in_channels = 4;
  r.out_channels = 2;
  r.kernel = 3;
  r.stride = 1;
  r.padding = 1;
  r.weight_bits = 4;
  r.weight_level_count = 15;
  r.weights = 0;  // 72 codes x 4 bits = 36 bytes
  r.weight_levels = 36;
  r.scale = 52;
  r.bias = 60;
  r.input_alpha = 2.0f;
  r.input_act_bits = 4;
  r.input_kind = 0;
  r.input_denominator = 48;
  r.groups = 1;
  return r;
}

std::vector<uint8_t> valid_file(LayerRecord r = valid_record()) {
  return apot::runtime::serialize_apot(R"({"arch":"test"})", {r}, std::vector<uint8_t>(68, 1));
}

std::string error_of(const std::vector<uint8_t>& bytes) {
  try {
    apot::runtime::parse_apot(bytes.data(), bytes.size(), "m.apot");
  } catch (const FormatError& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(ApotFormat, RoundTrip) {
  const auto bytes = valid_file();
  EXPECT_EQ(bytes.size() % 64, 0u);
  const auto parsed = apot::runtime::parse_apot(bytes.data(), bytes.size(), "m.apot");
  EXPECT_EQ(parsed.metadata, R"({"arch":"test"})");
  ASSERT_EQ(parsed.layers.size(), 1u);
  EXPECT_EQ(parsed.layers[0].out_channels, 2u);
  EXPECT_EQ(parsed.blob.size(), 68u);
}

TEST(ApotFormat, PackingRoundTripsForEveryWidth) {
  std::mt19937 rng(1);
  for (int bits = 1; bits <= 8; ++bits) {
    std::vector<uint8_t> codes(101);
    for (auto& c : codes) c = static_cast<uint8_t>(rng() % (1u << bits));
    const auto packed = apot::runtime::pack_codes(codes, bits);
    EXPECT_EQ(packed.size(), (101u * bits + 7) / 8);
    EXPECT_EQ(apot::runtime::unpack_codes(packed.data(), codes.size(), bits), codes);
  }
}

TEST(ApotFormat, TruncationWrongMagicAndVersion) {
  const auto good = valid_file();
  for (size_t cut : {size_t(0), size_t(10), size_t(63), size_t(100), good.size() - 1})
    EXPECT_NE(error_of(std::vector<uint8_t>(good.begin(), good.begin() + cut)), "") << cut;
  auto magic = good;
  magic[0] = 'X';
  EXPECT_NE(error_of(magic).find("magic"), std::string::npos);
  auto version = good;
  version[8] = 4;
  EXPECT_NE(error_of(version).find("version 4"), std::string::npos);
  version[8] = 1;  // the ResNet-only format of earlier versions
  EXPECT_NE(error_of(version).find("export it again from its checkpoint"), std::string::npos);
  auto padded = good;
  padded.push_back(0);
  EXPECT_NE(error_of(padded).find("truncated or padded"), std::string::npos);
}

TEST(ApotFormat, EveryFlippedByteIsDetected) {
  const auto good = valid_file();
  size_t detected = 0, flips = 0;
  for (size_t i = 0; i < good.size(); ++i) {
    auto bad = good;
    bad[i] ^= 0x5A;
    const std::string e = error_of(bad);
    ++flips;
    // Bytes in alignment padding between sections carry no data.
    detected += !e.empty();
  }
  const size_t padding_bytes = good.size() - 64 - 3 * 32 - 15 - 96 - 68;
  EXPECT_GE(detected, flips - padding_bytes);
}

TEST(ApotFormat, HostileRecordsAreRejected) {
  auto hostile = [](auto mutate) {
    LayerRecord r = valid_record();
    mutate(r);
    return error_of(valid_file(r));
  };
  EXPECT_NE(hostile([](LayerRecord& r) { r.weights = ~uint64_t(0) - 3; }), "");
  EXPECT_NE(hostile([](LayerRecord& r) { r.scale = uint64_t(1) << 62; }), "");
  EXPECT_NE(hostile([](LayerRecord& r) { r.out_channels = 1u << 30; }), "");
  EXPECT_NE(hostile([](LayerRecord& r) { r.weight_bits = 0; }), "");
  EXPECT_NE(hostile([](LayerRecord& r) { r.weight_level_count = 200; }), "");
  EXPECT_NE(hostile([](LayerRecord& r) { r.kind = 9; }), "");
  EXPECT_NE(hostile([](LayerRecord& r) { r.input_alpha = -1.0f; }), "");
  EXPECT_NE(hostile([](LayerRecord& r) { r.kernel = 0; }), "");
  EXPECT_NE(hostile([](LayerRecord& r) { r.bias = 61; }), "");  // misaligned floats
}

TEST(ApotFormat, HostileSectionTable) {
  auto good = valid_file();
  // Point the blob section far outside the file and fix the header checksum so that only the
  // bounds check can catch it.
  apot::runtime::SectionEntry e;
  std::memcpy(&e, good.data() + 64 + 2 * 32, 32);
  e.offset = ~uint64_t(0) - 10;
  std::memcpy(good.data() + 64 + 2 * 32, &e, 32);
  std::vector<uint8_t> hashed(24 + 96);
  std::memcpy(hashed.data(), good.data(), 24);
  std::memcpy(hashed.data() + 24, good.data() + 64, 96);
  const uint64_t sum = apot::runtime::checksum64(hashed.data(), hashed.size());
  std::memcpy(good.data() + 24, &sum, 8);
  EXPECT_NE(error_of(good).find("outside the file"), std::string::npos) << error_of(good);
}
