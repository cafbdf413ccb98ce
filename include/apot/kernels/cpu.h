// What this CPU can run, detected once for the whole project (the projection kernels, the
// engine's kernels and the reports that print it).
#pragma once

#include <string>

namespace apot::kernels {

struct CpuFeatures {
  bool avx2 = false, fma = false;
  bool avx512f = false, avx512bw = false, avx512dq = false, avx512vl = false, avx512vnni = false;
  bool avx512vbmi = false;       // vpermb: byte permutes (Ice Lake, Sapphire Rapids, Zen 4 on; not Cascade Lake)
  bool avx_vnni = false;         // VEX-encoded vpdpbusd (Intel since Alder Lake / Sapphire Rapids)
  bool avx512_bf16 = false;      // vdpbf16ps: bfloat16 dot products (Zen 4, Zen 5, Cooper Lake, Sapphire Rapids)
  bool amx_int8 = false;         // AMX tiles with tdpbusd (Sapphire Rapids on), the OS allowing them
  std::string describe() const;  // e.g. "avx2 fma avx512f avx512bw avx512dq avx512vl avx512vnni"
};

// Asked once: CPUID traps to the hypervisor in a virtual machine (microseconds each).
const CpuFeatures& cpu_features();

// This CPU's make and model from CPUID, e.g. "AuthenticAMD family 26 model 2 stepping 1: AMD
// EPYC ..." (a key for measurements that hold per microarchitecture); "unknown" off x86.
const std::string& cpu_model();

}  // namespace apot::kernels
