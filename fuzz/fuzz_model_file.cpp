// libFuzzer target: the model-file reader (TOML -> graph) and shape inference must reject or
// accept any text with a GraphError, never crash.
#include <cstddef>
#include <cstdint>
#include <string>

#include "apot/graph/serialize.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    apot::graph::Graph g =
        apot::graph::model_from_toml_text(std::string(reinterpret_cast<const char*>(data), size), "fuzz");
    g.infer_shapes(32, 32);
    apot::graph::assign_quantization(g, apot::graph::QuantAssignment{});
  } catch (const apot::graph::GraphError&) {
  }
  return 0;
}
