// libFuzzer target: the .apot reader and the engine must reject or accept any bytes without
// crashing or reading out of bounds; a file that loads is run on a zero image (small graphs
// only, so that each input stays fast).
#include <cstddef>
#include <cstdint>
#include <vector>

#include "apot/runtime/format.h"
#include "apot/runtime/model.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const auto parsed = apot::runtime::parse_apot(data, size, "fuzz");
    for (const auto& layer : parsed.layers)
      apot::runtime::unpack_codes(parsed.blob.data() + layer.weights, size_t(apot::runtime::weight_count(layer)),
                                  static_cast<int>(layer.weight_bits));
    const auto model = apot::runtime::Model::from_bytes(std::vector<uint8_t>(data, data + size), "fuzz");
    const auto& g = model.info().graph;
    int64_t macs = 0;
    for (int i : g.weight_layers()) macs += g.macs(i);
    if (macs > 2000000 || g[0].shape.size() > 100000) return 0;
    std::vector<float> image(size_t(g[0].shape.size()), 0.0f);
    model.run(image.data(), 1);
  } catch (const apot::runtime::FormatError&) {
  }
  return 0;
}
