// Aligned (and, for large blocks, huge-page backed) memory for packed weights.
#include <sys/mman.h>

#include <new>

#include "apot/kernels/gemm.h"

namespace apot::kernels {

namespace {
constexpr size_t kHugePage = size_t(2) << 20, kHugeFrom = size_t(1) << 20;
}

void* allocate_aligned(size_t bytes) {
  if (bytes < kHugeFrom) return ::operator new(bytes, std::align_val_t(64));
  const size_t rounded = (bytes + kHugePage - 1) / kHugePage * kHugePage;
  void* p = ::operator new(rounded, std::align_val_t(kHugePage));
#ifdef MADV_HUGEPAGE
  madvise(p, rounded, MADV_HUGEPAGE);  // advice: where it is refused, small pages remain
#endif
  return p;
}

void free_aligned(void* p, size_t bytes) { ::operator delete(p, std::align_val_t(bytes < kHugeFrom ? 64 : kHugePage)); }

}  // namespace apot::kernels
