#include <apot/runtime/model.h>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>
int main(int argc, char** argv) {
  auto m = apot::runtime::Model::load(argv[1]);
  int batch = argc > 2 ? atoi(argv[2]) : 1, reps = argc > 3 ? atoi(argv[3]) : 2000;
  auto& in = m.info();
  std::vector<uint8_t> x(in.input_size() * batch);
  for (size_t i = 0; i < x.size(); ++i) x[i] = uint8_t((i * 7919) % 255);
  std::vector<float> out(size_t(batch) * in.num_classes);
  apot::runtime::RunOptions o;
  double best = 1e9;
  for (int r = 0; r < reps; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    m.run_pixels(x.data(), batch, apot::runtime::PixelLayout::hwc, out.data(), o);
    double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::min(best, t);
  }
  printf("best %.4f ms  out0 %f\n", best * 1e3, out[0]);
}
