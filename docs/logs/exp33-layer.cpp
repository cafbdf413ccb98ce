#include <chrono>
#include <cstdio>
#include "engine_test_util.h"
using namespace apot::kernels::test;
int main(int argc, char** argv) {
  struct S {
    int h, w, c, n, k, s;
    bool residual;
  };
  S shapes[] = {{112, 112, 16, 96, 1, 1, false}, {56, 56, 24, 144, 1, 1, false}, {28, 28, 32, 192, 1, 1, false},
                {14, 14, 64, 384, 1, 1, false},  {14, 14, 96, 576, 1, 1, false}, {7, 7, 160, 960, 1, 1, false},
                {56, 56, 64, 64, 3, 1, true}};
  for (const S& s : shapes) {
    const Problem p = make(s.h, s.w, s.c, s.n, s.k, s.s, 15, 10, 7);
    Image in = input_image(p, 0, true);
    const auto packed = apot::kernels::pack_conv(p.W.data(), p.n, p.c, p.k, p.stride, p.pad);
    const auto q = requantizer(16, false);
    std::vector<float> values(size_t(p.oh()) * p.ow() * p.n);
    Image out(p.oh(), p.ow(), p.n, 1);
    ConvOutput o;
    o.scale = p.scale.data();
    o.bias = p.bias.data();
    o.requantizer = &q;
    o.codes = out.view;
    if (s.residual) {
      o.residual = p.residual.data();
      o.relu = true;
      o.values = values.data();
    }
    for (int sched = 0; sched < 2; ++sched) {
      apot::kernels::ConvSchedule amx;
      amx.amx = sched == 0;
      double best = 1e9;
      const int reps = s.h >= 56 ? 300 : 3000;
      for (int r = 0; r < reps; ++r) {
        auto t0 = std::chrono::steady_clock::now();
        apot::kernels::conv_u8s8(in.view, packed, p.max_a, o, GemmIsa::avx512_vnni, 1, amx);
        best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      }
      unsigned long h = 1469598103934665603ul;
      for (uint8_t b : out.bytes) h = (h ^ b) * 1099511628211ul;
      printf("%dx%dx%d->%d k%d %s %s: %.2f us  codes %016lx\n", s.h, s.w, s.c, s.n, s.k,
             s.residual ? "residual" : "codes   ", sched ? "vnni" : "amx ", best * 1e6, h);
    }
  }
}
