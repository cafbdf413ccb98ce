// ONNX import (docs/MODELS.md, "ONNX files"): an ONNX model exported by PyTorch (or another
// framework) becomes the network graph every stage reads, with its weights under the graph's
// parameter names, so that `eval`, `quantize`, `train --set init=` and `export` take it like a
// state dict. Read with Debian's libonnx (its protobuf classes); no LibTorch here.
//
// Ops: Conv (groups, square kernels, symmetric padding), BatchNormalization and Relu / Clip
// after a Conv, Gemm, MatMul or Add (fused into that node, as the graph keeps them), Add (of two
// values, or a bias), MaxPool, AveragePool, GlobalAveragePool, Flatten, Reshape (to flatten),
// Gemm, MatMul (+ Add of a bias), and the no-ops Identity, Dropout and Pad by zero. Shape
// arithmetic (Shape, Gather, Unsqueeze, Concat, Constant, Cast) that only feeds a Reshape's
// target shape is skipped. Every other op, a dynamic height or width, or a pattern the graph
// cannot hold ends with one line naming the ONNX node: graph::GraphError. A file that is not an
// ONNX model (corrupt, truncated) throws std::runtime_error.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "apot/graph/graph.h"

namespace apot::onnx_import {

// A weight tensor of the model, row-major float32.
struct Array {
  std::vector<int64_t> shape;
  std::vector<float> values;
};

struct Model {
  graph::Graph graph;  // arch: the file's stem; shapes inferred for the file's input size
  // State-dict names: "<node>.weight", "<node>.bias", "<bn>.weight", "<bn>.bias",
  // "<bn>.running_mean", "<bn>.running_var".
  std::map<std::string, Array> weights;
  int height = 0, width = 0;  // the input size in the file
};

// False where apot was built without libonnx-dev: then the readers throw graph::GraphError.
bool available();

// The extension is .onnx.
inline bool is_onnx_path(const std::string& path) {
  return path.size() > 5 && path.compare(path.size() - 5, 5, ".onnx") == 0 && path[path.size() - 6] != '/';
}

Model read_onnx(const std::string& path);
// `bytes` is the file's content; `source` names it in errors (for tests and the fuzz target).
Model read_onnx_bytes(const std::string& bytes, const std::string& source);

}  // namespace apot::onnx_import
