// Internal to src/onnx: the constants of an ONNX graph (initializers, Constant nodes) as
// doubles, and the folding of the constant arithmetic exporters write for shapes and pads.
#pragma once

#include <onnx/onnx_pb.h>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace apot::onnx_import::detail {

// A constant: an initializer, a Constant node's value, or a Cast of one.
struct Const {
  std::vector<int64_t> dims;
  std::vector<double> values;
  std::string error;       // set for a constant apot cannot read: an error only where it is used
  int64_t count() const {  // saturates at 2^40 (more than any tensor apot reads)
    int64_t n = 1;
    for (int64_t d : dims) n = d == 0 ? 0 : std::min<int64_t>(n, (int64_t(1) << 40) / d) * d;
    return n;
  }
};

// Reads a tensor's elements as doubles; float32/64, float16, int32/64 (shapes, pads, clips).
// A size that does not match the dimensions means a corrupt file (std::runtime_error); an
// element type apot does not read or external data is a graph::GraphError.
Const decode(const ::onnx::TensorProto& t, const std::string& source);

// Folds `n` if it is an op of constant arithmetic (Cast, Identity, ConstantOfShape, Reshape,
// Unsqueeze, Squeeze, Concat, Transpose, Slice, Gather) and all its inputs are constants
// (`in` by position, nullptr for an optional input left out); nullopt otherwise. Throws
// std::invalid_argument for inputs the op does not accept.
std::optional<Const> fold(const ::onnx::NodeProto& n, const std::vector<const Const*>& in,
                          const std::function<const ::onnx::AttributeProto*(const std::string&)>& attr);

// "16 x 3 x 3", or "a scalar".
std::string dims_str(const std::vector<int64_t>& dims);

}  // namespace apot::onnx_import::detail
