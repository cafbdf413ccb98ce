// One training step (zero_grad, forward, cross-entropy, backward, SGD step) of a CIFAR
// ResNet-20 at batch 128 on 3x32x32 inputs, side by side in one run (interleaved, medians):
//   fp32            the same network in full precision
//   apot-w4a4       W4A4 APoT with the fused kernels (first/last layer int8)
//   reference-w4a4  W4A4 APoT with the reference code's distance-matrix projection (LibTorch ops)
// Peak memory of each configuration is measured in a separate process (ru_maxrss).
// Usage: bench_train_step [--reps N] [--threads T] [--batch B] [--no-reference]
#include <sys/resource.h>
#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "apot/qat/modules.h"
#include "apot/qat/network.h"

using apot::qat::Backend;
using apot::qat::Network;
using apot::qat::QuantPolicy;

namespace {

struct Config {
  std::string name;
  bool quantized;
  Backend backend;
};

struct Setup {
  Network model{nullptr};
  std::unique_ptr<torch::optim::SGD> sgd;
};

Setup make_setup(const Config& c) {
  torch::manual_seed(0);
  Network model = apot::qat::make_network("resnet20");
  if (c.quantized) apot::qat::apply_policy(*model, QuantPolicy{});  // W4A4 APoT defaults
  model->train();
  auto sgd = std::make_unique<torch::optim::SGD>(model->parameters(),
                                                 torch::optim::SGDOptions(0.04).momentum(0.9).weight_decay(1e-4));
  return {model, std::move(sgd)};
}

double step(Setup& s, const Config& c, const torch::Tensor& x, const torch::Tensor& y) {
  apot::qat::set_backend(c.backend);
  const auto t0 = std::chrono::steady_clock::now();
  s.sgd->zero_grad();
  const torch::Tensor loss = torch::nn::functional::cross_entropy(s.model(x), y);
  loss.backward();
  s.sgd->step();
  const auto t1 = std::chrono::steady_clock::now();
  apot::qat::set_backend(Backend::automatic);
  return std::chrono::duration<double, std::milli>(t1 - t0).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

long peak_rss_kib_of_child(const std::string& config, int batch, int threads) {
  const std::string cmd = "/proc/" + std::to_string(getpid()) + "/exe --memory-only " + config + " --batch " +
                          std::to_string(batch) + " --threads " + std::to_string(threads);
  FILE* pipe = popen(cmd.c_str(), "r");
  if (!pipe) return -1;
  long kib = -1;
  if (std::fscanf(pipe, "%ld", &kib) != 1) kib = -1;
  pclose(pipe);
  return kib;
}

}  // namespace

int main(int argc, char** argv) {
  int reps = 7, threads = 2, batch = 128;
  bool with_reference = true;
  std::string memory_only;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--reps" && i + 1 < argc) reps = std::stoi(argv[++i]);
    else if (a == "--threads" && i + 1 < argc) threads = std::stoi(argv[++i]);
    else if (a == "--batch" && i + 1 < argc) batch = std::stoi(argv[++i]);
    else if (a == "--no-reference") with_reference = false;
    else if (a == "--memory-only" && i + 1 < argc) memory_only = argv[++i];
  }
  torch::set_num_threads(threads);
  std::vector<Config> configs{{"fp32", false, Backend::automatic}, {"apot-w4a4", true, Backend::automatic}};
  if (with_reference) configs.push_back({"reference-w4a4", true, Backend::reference_argmin});

  torch::manual_seed(1);
  const torch::Tensor x = torch::randn({batch, 3, 32, 32});
  const torch::Tensor y = torch::randint(0, 10, {batch}, torch::kLong);

  if (!memory_only.empty()) {  // child: a few steps of one configuration, then peak RSS in KiB
    for (const Config& c : configs) {
      if (c.name != memory_only) continue;
      Setup s = make_setup(c);
      for (int r = 0; r < 3; ++r) step(s, c, x, y);
      rusage usage{};
      getrusage(RUSAGE_SELF, &usage);
      std::printf("%ld\n", usage.ru_maxrss);
      return 0;
    }
    return 1;
  }

  std::printf("bench_train_step: ResNet-20 (option A), batch %d, 3x32x32, %d threads, %d interleaved repetitions\n",
              batch, threads, reps);
  std::vector<Setup> setups;
  for (const Config& c : configs) setups.push_back(make_setup(c));
  std::vector<std::vector<double>> ms(configs.size());
  for (size_t c = 0; c < configs.size(); ++c) step(setups[c], configs[c], x, y);  // warm-up
  for (int r = 0; r < reps; ++r)
    for (size_t c = 0; c < configs.size(); ++c) ms[c].push_back(step(setups[c], configs[c], x, y));
  const double fp = median(ms[0]);
  for (size_t c = 0; c < configs.size(); ++c) {
    const long rss = peak_rss_kib_of_child(configs[c].name, batch, threads);
    std::printf("  %-15s step median %9.1f ms   %5.2fx fp32   peak RSS %7.1f MiB\n", configs[c].name.c_str(),
                median(ms[c]), median(ms[c]) / fp, rss / 1024.0);
  }
  return 0;
}
