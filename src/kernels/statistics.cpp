// Two-pass mean and unbiased standard deviation, chunked over OpenMP threads with per-chunk
// double sums added in chunk order.
#include "apot/kernels/statistics.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace apot::kernels {
namespace {

constexpr size_t kChunk = size_t{1} << 14;

template <typename Term>
double chunked_sum(size_t n, Term term) {
  const long chunks = static_cast<long>((n + kChunk - 1) / kChunk);
  std::vector<double> partial(static_cast<size_t>(chunks), 0.0);
#pragma omp parallel for schedule(static) if (chunks > 4)
  for (long c = 0; c < chunks; ++c) {
    const size_t begin = static_cast<size_t>(c) * kChunk, end = std::min(n, begin + kChunk);
    // Eight independent accumulators in a fixed order: vectorisable without reassociation.
    double lanes[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    size_t i = begin;
    for (; i + 8 <= end; i += 8)
      for (int l = 0; l < 8; ++l) lanes[l] += term(i + l);
    for (; i < end; ++i) lanes[0] += term(i);
    partial[static_cast<size_t>(c)] =
        ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
  }
  double sum = 0.0;
  for (double p : partial) sum += p;
  return sum;
}

}  // namespace

MeanStd mean_std(const float* x, size_t n) {
  MeanStd r;
  if (n == 0) return r;
  r.mean = chunked_sum(n, [x](size_t i) { return double(x[i]); }) / double(n);
  if (n < 2) return r;
  const double m = r.mean;
  const double squares = chunked_sum(n, [x, m](size_t i) {
    const double d = double(x[i]) - m;
    return d * d;
  });
  r.std = std::sqrt(squares / double(n - 1));
  return r;
}

}  // namespace apot::kernels
