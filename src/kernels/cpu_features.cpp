// Run-time CPU feature detection (once), and the paths of the projection and engine kernels
// that follow from it, with their APOT_ISA / APOT_GEMM_ISA overrides.
#if defined(__x86_64__)
#include <cpuid.h>
#endif
#if defined(__linux__) && defined(__x86_64__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

#include <algorithm>
#include <cstdlib>
#include <stdexcept>
#include <string>

#include "apot/kernels/cpu.h"
#include "apot/kernels/gemm.h"
#include "apot/kernels/projection.h"

namespace apot::kernels {

namespace {
// AMX-TILE and AMX-INT8 (CPUID leaf 7: EDX bits 24 and 25), the OS saving the tile state (XCR0
// bits 17 and 18), and on Linux the process's permission to use it (arch_prctl
// ARCH_REQ_XCOMP_PERM for XTILEDATA, Linux 5.16 on; once granted it holds for every thread).
bool amx_int8_usable() {
#if defined(__x86_64__)
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx) || ((edx >> 24) & 3u) != 3u) return false;
  if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx) || ((ecx >> 27) & 1u) == 0) return false;  // OSXSAVE
  unsigned lo = 0, hi = 0;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  if (((lo >> 17) & 3u) != 3u) return false;
#if defined(__linux__)
  constexpr long kReqXcompPerm = 0x1023, kXtiledata = 18;
  return syscall(SYS_arch_prctl, kReqXcompPerm, kXtiledata) == 0;
#else
  return false;
#endif
#else
  return false;
#endif
}
}  // namespace

const CpuFeatures& cpu_features() {
  static const CpuFeatures detected = [] {
    CpuFeatures f;
#if defined(__x86_64__)
    __builtin_cpu_init();
    f.avx2 = __builtin_cpu_supports("avx2");
    f.fma = __builtin_cpu_supports("fma");
    f.avx512f = __builtin_cpu_supports("avx512f");
    f.avx512bw = __builtin_cpu_supports("avx512bw");
    f.avx512dq = __builtin_cpu_supports("avx512dq");
    f.avx512vl = __builtin_cpu_supports("avx512vl");
    f.avx512vnni = __builtin_cpu_supports("avx512vnni");
    f.avx512vbmi = __builtin_cpu_supports("avx512vbmi");
    // AVX-VNNI from CPUID leaf 7, sub-leaf 1 (EAX bit 4) directly: GCC's __builtin_cpu_supports
    // knows "avxvnni", Clang 14's does not. The OS must save the ymm state, which AVX2 support
    // (checked through the builtin) already implies.
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    const bool leaf_7_1 = __get_cpuid_count(7, 1, &eax, &ebx, &ecx, &edx);
    f.avx_vnni = f.avx2 && leaf_7_1 && ((eax >> 4) & 1u) != 0;
    // AVX512_BF16: the same sub-leaf, EAX bit 5 (the OS state is AVX-512's, checked above).
    f.avx512_bf16 = f.avx512f && leaf_7_1 && ((eax >> 5) & 1u) != 0;
    f.amx_int8 = amx_int8_usable();
#endif
    return f;
  }();
  return detected;
}

const std::string& cpu_model() {
  static const std::string model = [] {
    std::string s = "unknown";
#if defined(__x86_64__)
    unsigned r[4] = {0, 0, 0, 0};
    if (!__get_cpuid(0, &r[0], &r[1], &r[2], &r[3])) return s;
    const unsigned vendor[3] = {r[1], r[3], r[2]};
    std::string v(reinterpret_cast<const char*>(vendor), 12);
    __get_cpuid(1, &r[0], &r[1], &r[2], &r[3]);
    const unsigned base_family = (r[0] >> 8) & 0xf, base_model = (r[0] >> 4) & 0xf;
    const unsigned family = base_family == 0xf ? base_family + ((r[0] >> 20) & 0xff) : base_family;
    const unsigned model = base_family == 0xf || base_family == 6 ? base_model | ((r[0] >> 12) & 0xf0) : base_model;
    std::string brand;
    for (unsigned leaf = 0x80000002; leaf <= 0x80000004; ++leaf) {
      unsigned b[4] = {0, 0, 0, 0};
      if (!__get_cpuid(leaf, &b[0], &b[1], &b[2], &b[3])) break;
      brand.append(reinterpret_cast<const char*>(b), 16);
    }
    brand = brand.substr(0, brand.find('\0'));
    while (!brand.empty() && brand.back() == ' ') brand.pop_back();
    brand.erase(0, std::min(brand.size(), brand.find_first_not_of(' ')));
    s = v + " family " + std::to_string(family) + " model " + std::to_string(model) + " stepping " +
        std::to_string(r[0] & 0xf) + ": " + brand;
#endif
    return s;
  }();
  return model;
}

std::string CpuFeatures::describe() const {
  std::string s;
  const std::pair<bool, const char*> all[] = {{avx2, "avx2"},
                                              {fma, "fma"},
                                              {avx512f, "avx512f"},
                                              {avx512bw, "avx512bw"},
                                              {avx512dq, "avx512dq"},
                                              {avx512vl, "avx512vl"},
                                              {avx512vnni, "avx512vnni"},
                                              {avx512vbmi, "avx512vbmi"},
                                              {avx_vnni, "avx-vnni"},
                                              {avx512_bf16, "avx512bf16"},
                                              {amx_int8, "amx-int8"}};
  for (const auto& [has, name] : all)
    if (has) s += (s.empty() ? "" : " ") + std::string(name);
  return s.empty() ? "none" : s;
}

// ---- the projection kernels' paths ----

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
    const CpuFeatures& f = cpu_features();
    std::vector<Isa> out{Isa::scalar};
    if (f.avx2 && f.fma) out.push_back(Isa::avx2);
    if (f.avx512f && f.avx512bw && f.avx512dq && f.avx512vl) out.push_back(Isa::avx512);
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

// ---- the engine kernels' paths ----

const char* to_string(GemmIsa isa) {
  switch (isa) {
    case GemmIsa::scalar: return "scalar";
    case GemmIsa::avx2: return "avx2";
    case GemmIsa::avx_vnni: return "avx-vnni";
    case GemmIsa::avx512_vnni: return "avx512-vnni";
  }
  return "unknown";
}

const std::vector<GemmIsa>& supported_gemm_isas() {
  static const std::vector<GemmIsa> detected = [] {
    const CpuFeatures& f = cpu_features();
    const bool avx2 = f.avx2 && f.fma, avx512_vnni_vl = f.avx512f && f.avx512vl && f.avx512vnni;
    std::vector<GemmIsa> out{GemmIsa::scalar};
    if (avx2) out.push_back(GemmIsa::avx2);
    // The 256-bit VNNI kernels: VEX-encoded with AVX-VNNI, else the same code EVEX-encoded.
    if (avx2 && (f.avx_vnni || avx512_vnni_vl)) out.push_back(GemmIsa::avx_vnni);
    if (avx512_vnni_vl && f.avx512bw) out.push_back(GemmIsa::avx512_vnni);
    return out;
  }();
  return detected;
}

GemmIsa parse_gemm_isa(const std::string& name) {
  for (GemmIsa isa : supported_gemm_isas())
    if (name == to_string(isa)) return isa;
  throw std::runtime_error("APOT_GEMM_ISA=" + name +
                           " is not a GEMM path this CPU supports (scalar, avx2, avx-vnni, avx512-vnni)");
}

GemmIsa default_gemm_isa() {
  static const GemmIsa chosen = [] {
    if (const char* forced = std::getenv("APOT_GEMM_ISA"); forced && *forced) return parse_gemm_isa(forced);
    return supported_gemm_isas().back();
  }();
  return chosen;
}

}  // namespace apot::kernels
