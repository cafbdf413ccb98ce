// libFuzzer target: the .apot reader must reject or accept any bytes without crashing or
// reading out of bounds.
#include <cstddef>
#include <cstdint>

#include "apot/runtime/format.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const auto parsed = apot::runtime::parse_apot(data, size, "fuzz");
    for (const auto& layer : parsed.layers)
      apot::runtime::unpack_codes(parsed.blob.data() + layer.weights,
                                  size_t(layer.out_channels) * layer.in_channels * layer.kernel * layer.kernel,
                                  static_cast<int>(layer.weight_bits));
  } catch (const apot::runtime::FormatError&) {
  }
  return 0;
}
