// Run-time ISA detection and the APOT_ISA override.
#include <cstdlib>
#include <stdexcept>
#include <string>

#include "apot/kernels/projection.h"

namespace apot::kernels {

const char* to_string(Isa isa) {
  switch (isa) {
    case Isa::scalar: return "scalar";
    case Isa::avx2: return "avx2";
    case Isa::avx512: return "avx512";
  }
  return "unknown";
}

std::vector<Isa> supported_isas() {
  static const std::vector<Isa> detected = [] {
  std::vector<Isa> out{Isa::scalar};
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) out.push_back(Isa::avx2);
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl"))
    out.push_back(Isa::avx512);
#endif
  return out;
  }();
  return detected;
}

Isa parse_isa(const std::string& name) {
  for (Isa isa : supported_isas())
    if (name == to_string(isa)) return isa;
  if (name == "avx2" || name == "avx512")
    throw std::runtime_error("APOT_ISA=" + name + " but this CPU does not support it");
  throw std::runtime_error("APOT_ISA=" + name + " is not one of scalar, avx2, avx512");
}

Isa default_isa() {
  static const Isa chosen = [] {
    if (const char* forced = std::getenv("APOT_ISA"); forced && *forced) return parse_isa(forced);
    return supported_isas().back();
  }();
  return chosen;
}

}  // namespace apot::kernels
