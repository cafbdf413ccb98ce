// libFuzzer target: the ONNX importer must turn any bytes into a graph or one exception
// (GraphError for what apot cannot import, std::runtime_error for a corrupt file), never crash.
#include <cstddef>
#include <cstdint>
#include <string>

#include "apot/onnx/onnx_import.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const apot::onnx_import::Model m =
        apot::onnx_import::read_onnx_bytes(std::string(reinterpret_cast<const char*>(data), size), "fuzz.onnx");
    for (int i : m.graph.weight_layers()) (void)m.weights.at(m.graph[size_t(i)].name + ".weight");
  } catch (const std::exception&) {
  }
  return 0;
}
