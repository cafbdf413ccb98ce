// libFuzzer target: JPEG and PNG decoding (with and without scaled decoding).
#include <cstddef>
#include <cstdint>

#include "apot/data/dataset.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  for (int min_side : {0, 7}) {
    try {
      apot::data::decode_image(data, size, "fuzz", min_side);
    } catch (const apot::data::DataError&) {
    }
  }
  return 0;
}
