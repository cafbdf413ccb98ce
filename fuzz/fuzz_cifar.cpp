// libFuzzer target: CIFAR-10 and CIFAR-100 record parsing.
#include <cstddef>
#include <cstdint>

#include "apot/data/dataset.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  for (bool cifar100 : {false, true}) {
    std::vector<uint8_t> pixels;
    std::vector<int64_t> labels;
    try {
      apot::data::parse_cifar_records(data, size, cifar100, "fuzz", pixels, labels);
    } catch (const apot::data::DataError&) {
    }
  }
  return 0;
}
