// The .apot reader and writer. Every size and offset is checked in 64-bit arithmetic against the
// buffer before it is used.
#include "apot/runtime/format.h"

#include <xxhash.h>

#include <algorithm>
#include <cstring>

namespace apot::runtime {

uint64_t checksum64(const void* data, size_t size) { return XXH3_64bits(data, size); }

uint64_t weight_count(const LayerRecord& r) {
  return uint64_t(r.out_channels) * (r.in_channels / std::max(1u, r.groups)) * r.kernel * r.kernel;
}

uint64_t packed_weight_bytes(const LayerRecord& r) { return (weight_count(r) * r.weight_bits + 7) / 8; }

namespace {

uint64_t align_up(uint64_t v) { return (v + kAlignment - 1) / kAlignment * kAlignment; }

uint64_t header_checksum_of(const FileHeader& h, const SectionEntry* table, uint32_t count) {
  std::vector<uint8_t> bytes(24 + sizeof(SectionEntry) * count);
  std::memcpy(bytes.data(), &h, 24);
  std::memcpy(bytes.data() + 24, table, sizeof(SectionEntry) * count);
  return checksum64(bytes.data(), bytes.size());
}

bool fits(uint64_t offset, uint64_t size, uint64_t limit) { return offset <= limit && size <= limit - offset; }

void check_layer(const LayerRecord& r, size_t index, uint64_t blob_size, const std::string& name) {
  const std::string where = name + ": layer " + std::to_string(index) + ": ";
  if (r.kind < 1 || r.kind > 3) throw FormatError(where + "unknown layer kind " + std::to_string(r.kind));
  if (r.in_channels == 0 || r.out_channels == 0 || r.in_channels > (1u << 28) || r.out_channels > 65536)
    throw FormatError(where + "implausible channel counts");
  if (r.groups == 0 || r.in_channels % r.groups || r.out_channels % r.groups)
    throw FormatError(where + "groups must divide the input and output channels");
  if (weight_count(r) > (uint64_t(1) << 31)) throw FormatError(where + "implausibly many weights");
  for (uint8_t b : r.reserved)
    if (b != 0) throw FormatError(where + "reserved bytes are not zero (corrupted file)");
  if (r.kernel == 0 || r.kernel > 15 || r.stride == 0 || r.stride > 8 || r.padding > 16)
    throw FormatError(where + "implausible kernel, stride or padding");
  if (r.weight_bits < 1 || r.weight_bits > 8) throw FormatError(where + "weight bits must be 1..8");
  if (r.weight_level_count == 0 || r.weight_level_count > (1u << r.weight_bits))
    throw FormatError(where + "weight level count does not fit the code width");
  if (!fits(r.weights, packed_weight_bytes(r), blob_size)) throw FormatError(where + "weights outside the blob");
  if (!fits(r.weight_levels, r.weight_level_count, blob_size))
    throw FormatError(where + "weight levels outside the blob");
  const uint64_t floats = uint64_t(r.out_channels) * 4;
  if (!fits(r.scale, floats, blob_size) || !fits(r.bias, floats, blob_size) || r.scale % 4 || r.bias % 4)
    throw FormatError(where + "scale or bias outside the blob or misaligned");
  if (r.kind == uint32_t(LayerKind::quantized_conv)) {
    if (!(r.input_alpha > 0) || !(r.input_alpha < 1e30f)) throw FormatError(where + "input alpha must be positive");
    if (r.input_act_bits < 2 || r.input_act_bits > 8 || r.input_kind > 2 || r.input_denominator == 0 ||
        r.input_signed > 1)
      throw FormatError(where + "invalid input quantiser");
  } else if (r.input_signed != 0) {
    throw FormatError(where + "only quantised layers have signed inputs");
  }
}

}  // namespace

ParsedFile parse_apot(const uint8_t* bytes, size_t size, const std::string& name) {
  if (size < sizeof(FileHeader)) throw FormatError(name + ": too short for an .apot file (truncated?)");
  FileHeader h;
  std::memcpy(&h, bytes, sizeof h);
  if (std::memcmp(h.magic, kMagic, 8) != 0) throw FormatError(name + ": not an .apot file (wrong magic)");
  if (h.version == 1)
    throw VersionError(name +
                       ": written by an earlier apot (.apot version 1, ResNets only); export it again from its "
                       "checkpoint: apot export --checkpoint CKPT --out FILE");
  if (h.version < kOldestReadableVersion || h.version > kFormatVersion)
    throw VersionError(name + ": .apot version " + std::to_string(h.version) + " is not supported (this reader reads " +
                       std::to_string(kOldestReadableVersion) + " to " + std::to_string(kFormatVersion) + ")");
  if (h.file_size != size)
    throw FormatError(name + ": file is " + std::to_string(size) + " bytes but its header says " +
                      std::to_string(h.file_size) + " (truncated or padded)");
  if (h.section_count < 1 || h.section_count > 16) throw FormatError(name + ": implausible section count");
  for (uint8_t b : h.reserved)
    if (b != 0) throw FormatError(name + ": reserved header bytes are not zero (corrupted file)");
  if (!fits(sizeof(FileHeader), uint64_t(h.section_count) * sizeof(SectionEntry), size))
    throw FormatError(name + ": section table outside the file");
  std::vector<SectionEntry> table(h.section_count);
  std::memcpy(table.data(), bytes + sizeof(FileHeader), sizeof(SectionEntry) * h.section_count);
  if (header_checksum_of(h, table.data(), h.section_count) != h.header_checksum)
    throw FormatError(name + ": header checksum mismatch (corrupted file)");
  ParsedFile out;
  const uint8_t* sections[4] = {nullptr, nullptr, nullptr, nullptr};
  uint64_t sizes[4] = {0, 0, 0, 0};
  for (const SectionEntry& e : table) {
    if (e.kind < 1 || e.kind > 3) continue;  // unknown sections are skipped (forward compatible)
    if (!fits(e.offset, e.size, size) || e.offset % kAlignment)
      throw FormatError(name + ": section " + std::to_string(e.kind) + " outside the file or misaligned");
    if (sections[e.kind]) throw FormatError(name + ": duplicate section " + std::to_string(e.kind));
    if (checksum64(bytes + e.offset, e.size) != e.checksum)
      throw FormatError(name + ": checksum mismatch in section " + std::to_string(e.kind) + " (corrupted file)");
    sections[e.kind] = bytes + e.offset;
    sizes[e.kind] = e.size;
  }
  for (uint32_t k = 1; k <= 3; ++k)
    if (!sections[k]) throw FormatError(name + ": missing section " + std::to_string(k));
  out.metadata.assign(reinterpret_cast<const char*>(sections[1]), sizes[1]);
  if (sizes[2] % sizeof(LayerRecord) || sizes[2] == 0 || sizes[2] / sizeof(LayerRecord) > 4096)
    throw FormatError(name + ": layer section size is not a whole number of records");
  out.layers.resize(sizes[2] / sizeof(LayerRecord));
  std::memcpy(out.layers.data(), sections[2], sizes[2]);
  out.blob.assign(sections[3], sections[3] + sizes[3]);
  for (size_t i = 0; i < out.layers.size(); ++i) check_layer(out.layers[i], i, sizes[3], name);
  return out;
}

std::vector<uint8_t> serialize_apot(const std::string& metadata, const std::vector<LayerRecord>& layers,
                                    const std::vector<uint8_t>& blob) {
  const uint32_t count = 3;
  FileHeader h{};
  std::memcpy(h.magic, kMagic, 8);
  h.version = kFormatVersion;
  h.section_count = count;
  SectionEntry table[3]{};
  const void* data[3] = {metadata.data(), layers.data(), blob.data()};
  const uint64_t lengths[3] = {metadata.size(), layers.size() * sizeof(LayerRecord), blob.size()};
  uint64_t offset = align_up(sizeof(FileHeader) + sizeof(table));
  for (uint32_t i = 0; i < count; ++i) {
    table[i].kind = i + 1;
    table[i].offset = offset;
    table[i].size = lengths[i];
    table[i].checksum = checksum64(data[i], lengths[i]);
    offset = align_up(offset + lengths[i]);
  }
  h.file_size = offset;
  h.header_checksum = header_checksum_of(h, table, count);
  std::vector<uint8_t> out(offset, 0);
  std::memcpy(out.data(), &h, sizeof h);
  std::memcpy(out.data() + sizeof h, table, sizeof table);
  for (uint32_t i = 0; i < count; ++i)
    if (lengths[i]) std::memcpy(out.data() + table[i].offset, data[i], lengths[i]);
  return out;
}

std::vector<uint8_t> pack_codes(const std::vector<uint8_t>& codes, int bits) {
  std::vector<uint8_t> out((codes.size() * bits + 7) / 8, 0);
  for (size_t i = 0; i < codes.size(); ++i)
    for (int b = 0; b < bits; ++b)
      if (codes[i] >> b & 1) {
        const size_t bit = i * bits + b;
        out[bit / 8] |= static_cast<uint8_t>(1u << (bit % 8));
      }
  return out;
}

std::vector<uint8_t> unpack_codes(const uint8_t* packed, size_t count, int bits) {
  std::vector<uint8_t> out(count, 0);
  for (size_t i = 0; i < count; ++i)
    for (int b = 0; b < bits; ++b) {
      const size_t bit = i * bits + b;
      out[i] |= static_cast<uint8_t>((packed[bit / 8] >> (bit % 8) & 1) << b);
    }
  return out;
}

}  // namespace apot::runtime
