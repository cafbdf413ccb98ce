// The .apot file format (docs/FORMAT.md): header, section table, layer records, and a
// validating parser that never reads out of bounds. No LibTorch. The graph the records belong
// to is in the metadata; runtime::Model checks records against it.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "apot/runtime/model.h"  // FormatError, VersionError

namespace apot::runtime {

constexpr char kMagic[8] = {'A', 'P', 'O', 'T', 'M', 'D', 'L', '\0'};
constexpr uint32_t kFormatVersion = 3;
// Version 3 adds input_signed (in bytes that version 2 kept zero) and quantised linear and
// depthwise records: a version 2 file reads as version 3 with every input unsigned.
constexpr uint32_t kOldestReadableVersion = 2;
constexpr uint64_t kAlignment = 64;

enum class SectionKind : uint32_t { metadata = 1, layers = 2, blob = 3 };
enum class LayerKind : uint32_t { quantized_conv = 1, float_conv = 2, float_linear = 3 };

#pragma pack(push, 1)
struct FileHeader {
  char magic[8];
  uint32_t version;
  uint32_t section_count;
  uint64_t file_size;
  uint64_t header_checksum;
  uint8_t reserved[32];
};
struct SectionEntry {
  uint32_t kind;
  uint32_t reserved;
  uint64_t offset;
  uint64_t size;
  uint64_t checksum;
};
struct LayerRecord {
  uint32_t kind;
  uint32_t in_channels, out_channels, kernel, stride, padding;
  uint32_t weight_bits, weight_level_count;
  uint64_t weights, weight_levels, scale, bias;  // offsets into the blob section
  float input_alpha;
  uint32_t input_act_bits, input_kind, input_denominator;
  uint32_t groups;        // version 2; weights per output channel: in_channels / groups * kernel^2
  uint32_t input_signed;  // version 3 (kind 1): 1 if the input levels are signed (symmetric)
  uint8_t reserved[8];
};
#pragma pack(pop)
static_assert(sizeof(FileHeader) == 64, "header is 64 bytes");
static_assert(sizeof(SectionEntry) == 32, "section entries are 32 bytes");
static_assert(sizeof(LayerRecord) == 96, "layer records are 96 bytes");

uint64_t checksum64(const void* data, size_t size);

// Weight count and bytes of the packed weight codes of a layer record.
uint64_t weight_count(const LayerRecord& r);
uint64_t packed_weight_bytes(const LayerRecord& r);

struct ParsedFile {
  std::string metadata;             // JSON text
  std::vector<LayerRecord> layers;  // validated against the blob
  std::vector<uint8_t> blob;
};

// Validates everything in docs/FORMAT.md; `name` is used in errors.
ParsedFile parse_apot(const uint8_t* bytes, size_t size, const std::string& name);
std::vector<uint8_t> serialize_apot(const std::string& metadata, const std::vector<LayerRecord>& layers,
                                    const std::vector<uint8_t>& blob);

// Little helpers for packing b-bit codes (LSB first).
std::vector<uint8_t> pack_codes(const std::vector<uint8_t>& codes, int bits);
std::vector<uint8_t> unpack_codes(const uint8_t* packed, size_t count, int bits);

}  // namespace apot::runtime
