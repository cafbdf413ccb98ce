// Session 32 (issue 20): does the AMX unit run beside the AVX-512 epilogue on this CPU? A loop of
// tile work (4 tdpbusd, with or without 3 tile loads: two A tiles 16 bytes a row apart, as in
// ResNet-20's 16-channel layers, and one B tile) and a loop of vector work (64 independent FMAs,
// with or without the epilogue's memory traffic: a load of sums, a load of residuals, a store of
// values per vector), each alone and both in one loop, in TSC ticks per iteration (best of 5).
// Two more tile sides: the tile loads into a tile no tdpbusd reads (no wait for the tiles'
// readers), and two accumulators with two sets of operand tiles loaded in turn (6 tile loads).
// Where the tiles run beside the vectors, "both" is near the larger of the two; where they do
// not, near the sum. Build and run (Linux, AMX-INT8):
//   g++ -O2 -mavx512f -mamx-tile -mamx-int8 -mfma docs/logs/exp32-amx-overlap.cpp -o /tmp/amx-overlap
//   /tmp/amx-overlap
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <x86intrin.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>

struct alignas(64) Config {
  uint8_t palette = 1, start = 0, reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};
alignas(64) int8_t A[5120], B[1024];
alignas(64) int32_t S[256];
alignas(64) float R[4096], O[4096];

enum class Tiles { none, dpbusd, loads, loads_unread, two_sets };

template <Tiles T, bool Vectors, bool Memory>
__attribute__((noinline)) double loop(int n) {
  __m512 v[8];
  for (int i = 0; i < 8; ++i) v[i] = _mm512_set1_ps(1.0f + float(i));
  const __m512 k = _mm512_set1_ps(0.999f), c = _mm512_set1_ps(0.001f);
  const uint64_t t0 = __rdtsc();
  for (int it = 0; it < n; ++it) {
    const int8_t* a = A + (it & 63) * 16;
    if constexpr (T == Tiles::dpbusd || T == Tiles::loads) {
      if constexpr (T == Tiles::loads) {
        _tile_loadd(4, a, 16);
        _tile_loadd(6, B, 64);
        _tile_loadd(5, a + 1024, 16);
      }
      _tile_dpbusd(0, 4, 6);
      _tile_dpbusd(1, 4, 7);
      _tile_dpbusd(2, 5, 6);
      _tile_dpbusd(3, 5, 7);
    } else if constexpr (T == Tiles::loads_unread) {
      _tile_loadd(7, a, 16);
      _tile_loadd(7, B, 64);
      _tile_loadd(7, a + 1024, 16);
      _tile_dpbusd(0, 4, 6);
      _tile_dpbusd(1, 4, 5);
      _tile_dpbusd(2, 5, 6);
      _tile_dpbusd(3, 5, 4);
    } else if constexpr (T == Tiles::two_sets) {
      _tile_loadd(2, a, 16);
      _tile_loadd(3, B, 64);
      _tile_loadd(4, a + 1024, 16);
      _tile_dpbusd(0, 2, 3);
      _tile_dpbusd(1, 4, 3);
      _tile_loadd(5, a + 2048, 16);
      _tile_loadd(6, B, 64);
      _tile_loadd(7, a + 3072, 16);
      _tile_dpbusd(0, 5, 6);
      _tile_dpbusd(1, 7, 6);
    }
    if (Vectors)
      for (int j = 0; j < 8; ++j)
        for (int i = 0; i < 8; ++i) {
          const int at = (it * 16 + i * 16 + j * 128) & 4095;
          if (Memory) {
            __m512 x = _mm512_cvtepi32_ps(_mm512_load_si512(S + ((i * 16 + j * 128) & 255)));
            x = _mm512_add_ps(x, _mm512_load_ps(R + at));
            v[i] = _mm512_fmadd_ps(x, k, c);
            _mm512_store_ps(O + at, v[i]);
          } else {
            v[i] = _mm512_fmadd_ps(v[i], k, c);
          }
        }
  }
  const uint64_t t1 = __rdtsc();
  __m512 s = v[0];
  for (int i = 1; i < 8; ++i) s = _mm512_add_ps(s, v[i]);
  _mm512_store_ps(O, s);
  return double(t1 - t0) / n;
}

template <Tiles T, bool Memory>
void row(const char* what) {
  const int n = 200000;
  double t = 1e30, v = 1e30, both = 1e30;
  for (int r = 0; r < 5; ++r) {
    t = std::min(t, loop<T, false, Memory>(n));
    v = std::min(v, loop<Tiles::none, true, Memory>(n));
    both = std::min(both, loop<T, true, Memory>(n));
  }
  std::printf("%-52s tiles %6.1f  vectors %6.1f  both %6.1f  (max %6.1f, sum %6.1f)\n", what, t, v, both,
              std::max(t, v), t + v);
}

int main() {
  if (syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XTILEDATA */) != 0) {
    std::fprintf(stderr, "amx-overlap: the OS does not grant AMX tile data\n");
    return 1;
  }
  Config config;
  for (int t = 0; t < 8; ++t) {
    config.rows[t] = 16;
    config.colsb[t] = 64;
  }
  _tile_loadconfig(&config);
  _tile_loadd(4, A, 64);
  _tile_loadd(5, A, 64);
  _tile_loadd(6, B, 64);
  _tile_loadd(7, B, 64);
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  for (int round = 0; round < 2; ++round) {
    row<Tiles::dpbusd, false>("tdpbusd | FMAs");
    row<Tiles::dpbusd, true>("tdpbusd | FMAs with loads and stores");
    row<Tiles::loads, false>("tile loads + tdpbusd | FMAs");
    row<Tiles::loads, true>("tile loads + tdpbusd | FMAs with loads and stores");
    row<Tiles::loads_unread, true>("loads to an unread tile + tdpbusd | the same");
    row<Tiles::two_sets, true>("two operand sets, 2 accumulators | the same");
  }
  _tile_release();
}
