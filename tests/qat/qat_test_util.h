// Helpers of the QAT tests: run a test body on both operator implementations.
#pragma once

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "apot/qat/quantizer.h"

namespace apot::test {

// Restores the automatic backend when a test ends, whatever happened.
struct BackendGuard {
  explicit BackendGuard(qat::Backend b) { qat::set_backend(b); }
  ~BackendGuard() { qat::set_backend(qat::Backend::automatic); }
};

inline const char* backend_name(qat::Backend b) { return b == qat::Backend::automatic ? "kernels" : "torch-ops"; }

inline std::vector<qat::Backend> all_backends() { return {qat::Backend::automatic, qat::Backend::torch_ops}; }

inline bool bitwise_equal(const torch::Tensor& a, const torch::Tensor& b) {
  if (!a.sizes().equals(b.sizes())) return false;
  const torch::Tensor x = a.contiguous(), y = b.contiguous();
  return std::memcmp(x.data_ptr(), y.data_ptr(), x.numel() * x.element_size()) == 0;
}

}  // namespace apot::test
