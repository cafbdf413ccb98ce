// Tensor statistics for weight normalisation (APOT_SPEC section 3), summed in double in a
// fixed order so that the result never depends on the number of threads.
#pragma once

#include <cstddef>

namespace apot::kernels {

struct MeanStd {
  double mean = 0.0;
  double std = 0.0;  // unbiased (n - 1), as torch.std; 0 for n < 2
};

MeanStd mean_std(const float* x, size_t n);

}  // namespace apot::kernels
