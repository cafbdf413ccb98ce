// ONNX import where apot was built without Debian's libonnx-dev (scripts/setup.sh installs it).
#include "apot/onnx/onnx_import.h"

namespace apot::onnx_import {

bool available() { return false; }

Model read_onnx_bytes(const std::string&, const std::string& source) {
  throw graph::GraphError(source + ": this apot was built without ONNX support (install libonnx-dev and rebuild)");
}

Model read_onnx(const std::string& path) { return read_onnx_bytes("", path); }

}  // namespace apot::onnx_import
