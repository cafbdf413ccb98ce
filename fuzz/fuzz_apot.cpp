// libFuzzer target: the .apot reader, the engine and the C API must reject or accept any bytes
// without crashing or reading out of bounds, and the C API must agree with the C++ API on which
// files load. A file that loads is run on a zero image (small graphs only, so that each input
// stays fast), through both.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "apot/apot.h"
#include "apot/runtime/format.h"
#include "apot/runtime/inspect.h"
#include "apot/runtime/model.h"

// The engine's kernel tuning (APOT_TUNE) would run every layer of each file that loads, sized as
// the file says, at load time: off here, as the run below is limited to small graphs.
extern "C" int LLVMFuzzerInitialize(int*, char***) {
  setenv("APOT_TUNE", "0", 1);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  apot_model* handle = nullptr;
  const apot_status status =
      apot_model_load_from_memory(size ? data : reinterpret_cast<const uint8_t*>(""), size, &handle);
  bool loaded = false;
  try {
    const auto parsed = apot::runtime::parse_apot(data, size, "fuzz");
    for (const auto& layer : parsed.layers)
      apot::runtime::unpack_codes(parsed.blob.data() + layer.weights, size_t(apot::runtime::weight_count(layer)),
                                  static_cast<int>(layer.weight_bits));
    const auto model = apot::runtime::Model::from_memory(data, size, "fuzz");
    loaded = true;
    const auto& g = apot::runtime::Inspector(model).graph();
    int64_t macs = 0;
    for (int i : g.weight_layers()) macs += g.macs(i);
    if (macs <= 2000000 && g[0].shape.size() <= 100000) {
      const apot::runtime::ModelInfo& info = model.info();
      std::vector<float> image(info.input_size(), 0.0f);
      model.run(image.data(), 1);
      std::vector<uint8_t> pixels(info.input_size(), 0);
      std::vector<float> logits(size_t(info.num_classes));
      if (apot_model_run_u8(handle, pixels.data(), pixels.size(), 1, APOT_LAYOUT_HWC, logits.data(), logits.size(),
                            nullptr) != APOT_OK)
        std::abort();
    }
  } catch (const apot::runtime::FormatError&) {
  }
  if (loaded != (status == APOT_OK)) std::abort();  // the two APIs disagree
  apot_model_free(handle);
  return 0;
}
