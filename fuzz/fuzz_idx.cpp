// libFuzzer target: the IDX parser must reject or accept any bytes without crashing.
#include <cstddef>
#include <cstdint>

#include "apot/data/dataset.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    apot::data::parse_idx(data, size, "fuzz");
  } catch (const apot::data::DataError&) {
  }
  return 0;
}
