// Scalar reference kernels: plain loops over the element functions of projection_impl.h.
#include <cmath>

#include "projection_impl.h"

namespace apot::kernels::detail {
namespace {

size_t quantize_scalar(const RangeArgs& a, size_t begin, size_t end) {
  size_t nans = 0;
  for (size_t i = begin; i < end; ++i) {
    nans += std::isnan(normalised_input(a, a.input[i]));
    a.index_out[i] = index_element(a, a.input[i]);
  }
  return nans;
}

void dequantize_scalar(const RangeArgs& a, size_t begin, size_t end) {
  for (size_t i = begin; i < end; ++i) a.out[i] = a.full_levels[a.index_in[i]] * a.alpha;
}

void forward_scalar(const RangeArgs& a, size_t begin, size_t end) {
  if (a.out_bf16) {
    for (size_t i = begin; i < end; ++i) a.out_bf16[i] = bfloat16_bits(forward_element(a, a.input[i]));
    return;
  }
  for (size_t i = begin; i < end; ++i) a.out[i] = forward_element(a, a.input[i]);
}

double backward_scalar(const RangeArgs& a, size_t begin, size_t end) {
  double sum = 0.0;
  for (size_t i = begin; i < end; ++i) {
    const float g = a.grad_output_bf16 ? from_bfloat16(a.grad_output_bf16[i]) : a.grad_output[i];
    sum += backward_element(a, a.input[i], g, &a.grad_input[i]);
  }
  return sum;
}

}  // namespace

const IsaKernels kScalarKernels = {quantize_scalar, dequantize_scalar, forward_scalar, backward_scalar};

}  // namespace apot::kernels::detail
