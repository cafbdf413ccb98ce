// One training step (zero_grad, forward, cross-entropy, backward, SGD step) of a CIFAR
// ResNet-20 at batch 128 on 3x32x32 inputs, side by side in one run (medians):
//   fp32                 full precision as the trainer ran it before issue 16: NCHW batches,
//                        the C library's default allocator
//   apot-w4a4            W4A4 APoT with the fused kernels (first/last layer int8), the same way
//   fp32-channels-last   full precision with channels-last batches (oneDNN's convolutions are
//                        faster on them) and freed memory kept (train::keep_freed_memory: no
//                        fresh pages faulted in every step): train.memory_format = "auto"
//   apot-w4a4-channels-last  W4A4 APoT on that path
//   fp32-fastest         as fp32-channels-last, with the convolutions in bfloat16 where the CPU
//                        has AVX512_BF16 (train.conv_precision = "auto"; else the same as it)
//   apot-w4a4-fastest    W4A4 APoT on that path
//   reference-w4a4       W4A4 APoT with the reference code's distance-matrix projection
//   2 ranks x 1 thread   apot-w4a4-fastest data-parallel (Gloo, batch/2 per rank) against
//                        1 rank x 2 threads at the whole batch
// The allocator is a process setting, so each path runs in its own child process; the children
// alternate round by round and the medians are over every round's steps. Peak memory of each
// configuration is measured in a separate process (ru_maxrss). The machine's FP32 peak is
// measured on the spot (independent FMA chains), and each row's share of it is the step's
// convolution FLOPs (forward, input and weight gradients) over its time.
// Usage: bench_train_step [--rounds R] [--steps N] [--threads T] [--batch B] [--no-reference]
//                         [--no-ranks]
#include <immintrin.h>
#include <sys/resource.h>
#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "apot/graph/cost.h"
#include "apot/kernels/cpu.h"
#include "apot/qat/modules.h"
#include "apot/qat/network.h"
#include "apot/train/distributed.h"
#include "apot/train/trainer.h"

using apot::qat::Backend;
using apot::qat::Network;
using apot::qat::QuantPolicy;

namespace {

struct Config {
  std::string name;
  bool quantized;
  Backend backend;
  bool fastest;       // channels-last batches, freed memory kept
  bool bf16 = false;  // convolutions in bfloat16 (where the CPU has AVX512_BF16)
  // The child process it runs in: today, fastest, or reference (alone, as its huge allocations
  // would change the C library's allocation thresholds for the others).
  std::string path() const {
    return backend == Backend::reference_argmin ? "reference" : fastest ? "fastest" : "today";
  }
};

const std::vector<Config>& all_configs() {
  static const std::vector<Config> c{{"fp32", false, Backend::automatic, false},
                                     {"apot-w4a4", true, Backend::automatic, false},
                                     {"fp32-channels-last", false, Backend::automatic, true},
                                     {"apot-w4a4-channels-last", true, Backend::automatic, true},
                                     {"fp32-fastest", false, Backend::automatic, true, true},
                                     {"apot-w4a4-fastest", true, Backend::automatic, true, true},
                                     {"reference-w4a4", true, Backend::reference_argmin, false}};
  return c;
}

struct Setup {
  Network model{nullptr};
  std::unique_ptr<torch::optim::SGD> sgd;
};

Setup make_setup(const Config& c) {
  torch::manual_seed(0);
  Network model = apot::qat::make_network("resnet20");
  if (c.quantized) apot::qat::apply_policy(*model, QuantPolicy{});  // W4A4 APoT defaults
  if (c.bf16 && apot::qat::cpu_has_native_bf16()) model->set_conv_precision(apot::qat::ConvPrecision::bf16);
  model->train();
  auto sgd = std::make_unique<torch::optim::SGD>(model->parameters(),
                                                 torch::optim::SGDOptions(0.04).momentum(0.9).weight_decay(1e-4));
  return {model, std::move(sgd)};
}

long minor_faults() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_minflt;
}

struct StepTime {
  double ms;
  long faults;
};

StepTime step(Setup& s, const Config& c, const torch::Tensor& x, const torch::Tensor& y,
              apot::train::Communicator* comm = nullptr) {
  apot::qat::set_backend(c.backend);
  const long f0 = minor_faults();
  const auto t0 = std::chrono::steady_clock::now();
  s.sgd->zero_grad();
  const torch::Tensor in = c.fastest ? x.contiguous(at::MemoryFormat::ChannelsLast) : x;
  const torch::Tensor loss = torch::nn::functional::cross_entropy(s.model(in), y);
  loss.backward();
  if (comm) comm->finish_gradients();
  s.sgd->step();
  const auto t1 = std::chrono::steady_clock::now();
  apot::qat::set_backend(Backend::automatic);
  return {std::chrono::duration<double, std::milli>(t1 - t0).count(), minor_faults() - f0};
}

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

std::string self() { return "/proc/" + std::to_string(getpid()) + "/exe"; }

// Runs a shell command, returning its standard output.
std::string output_of(const std::string& cmd) {
  std::string out;
  FILE* pipe = popen(cmd.c_str(), "r");
  if (!pipe) return out;
  char buf[4096];
  for (size_t n; (n = std::fread(buf, 1, sizeof buf, pipe)) > 0;) out.append(buf, n);
  pclose(pipe);
  return out;
}

// FP32 FMAs per second of one thread: 12 independent chains of 512-bit (or 256-bit) FMAs, each
// a named variable so that the compiler keeps it in a register.
#define APOT_FMA_CHAINS(FMA) \
  a0 = FMA(a0, b, c);        \
  a1 = FMA(a1, b, c);        \
  a2 = FMA(a2, b, c);        \
  a3 = FMA(a3, b, c);        \
  a4 = FMA(a4, b, c);        \
  a5 = FMA(a5, b, c);        \
  a6 = FMA(a6, b, c);        \
  a7 = FMA(a7, b, c);        \
  a8 = FMA(a8, b, c);        \
  a9 = FMA(a9, b, c);        \
  a10 = FMA(a10, b, c);      \
  a11 = FMA(a11, b, c);

__attribute__((target("avx512f"))) double fma_peak_avx512(long rounds) {
  __m512 a0 = _mm512_set1_ps(1.0f), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0, a8 = a0, a9 = a0,
         a10 = a0, a11 = a0;
  const __m512 b = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-7f);
  const auto t0 = std::chrono::steady_clock::now();
  for (long k = 0; k < rounds; ++k) {
    APOT_FMA_CHAINS(_mm512_fmadd_ps)
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const __m512 all = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)),
                                   _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a4, a5), _mm512_add_ps(a6, a7)),
                                                 _mm512_add_ps(_mm512_add_ps(a8, a9), _mm512_add_ps(a10, a11))));
  if (_mm512_reduce_add_ps(all) == 12345.0f) std::puts("");
  return rounds * 12.0 * 16 / s;
}

__attribute__((target("avx2,fma"))) double fma_peak_avx2(long rounds) {
  __m256 a0 = _mm256_set1_ps(1.0f), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0, a8 = a0, a9 = a0,
         a10 = a0, a11 = a0;
  const __m256 b = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-7f);
  const auto t0 = std::chrono::steady_clock::now();
  for (long k = 0; k < rounds; ++k) {
    APOT_FMA_CHAINS(_mm256_fmadd_ps)
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const __m256 all = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)),
                                   _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(a4, a5), _mm256_add_ps(a6, a7)),
                                                 _mm256_add_ps(_mm256_add_ps(a8, a9), _mm256_add_ps(a10, a11))));
  alignas(32) float v[8];
  _mm256_store_ps(v, all);
  if (v[0] == 12345.0f) std::puts("");
  return rounds * 12.0 * 8 / s;
}
#undef APOT_FMA_CHAINS

// The best of a few measurements, in G FMA/s per thread (0 where the CPU has neither ISA).
double fp32_peak_gfma() {
  const auto& f = apot::kernels::cpu_features();
  double best = 0;
  for (int r = 0; r < 5; ++r)
    best = std::max(best, f.avx512f ? fma_peak_avx512(20'000'000) : f.avx2 && f.fma ? fma_peak_avx2(20'000'000) : 0.0);
  return best / 1e9;
}

// Convolution and linear MACs of one training step: the forward pass, the input gradients
// (every layer but the first) and the weight gradients.
double step_gmacs(int batch) {
  const Network model = apot::qat::make_network("resnet20");
  const auto cost = apot::graph::compute_cost(model->graph(), 32, 32, 4, 4, "fp");
  const double forward = double(cost.macs), first = double(cost.layers.front().macs);
  return batch * (3 * forward - first) / 1e9;
}

// "model name, family F model M" from /proc/cpuinfo (Zen 4 is family 25, Zen 5 family 26).
std::string cpu_name() {
  std::ifstream in("/proc/cpuinfo");
  std::string line, name, family, model;
  auto value = [&] { return line.substr(line.find(':') + 2); };
  while (std::getline(in, line) && (name.empty() || family.empty() || model.empty())) {
    if (line.rfind("model name", 0) == 0) name = value();
    else if (line.rfind("cpu family", 0) == 0) family = value();
    else if (line.rfind("model\t", 0) == 0) model = value();
  }
  return name + ", family " + family + " model " + model;
}

// ---- child processes ----

// --child PATH: warm-up, then `steps` interleaved steps of each of the path's configurations;
// prints "NAME MS FAULTS" per step.
int run_child(const std::string& path, int steps, int batch) {
  if (path == "fastest") apot::train::keep_freed_memory();
  std::vector<Config> configs;
  for (const Config& c : all_configs())
    if (c.path() == path) configs.push_back(c);
  torch::manual_seed(1);
  const torch::Tensor x = torch::randn({batch, 3, 32, 32});
  const torch::Tensor y = torch::randint(0, 10, {batch}, torch::kLong);
  std::vector<Setup> setups;
  for (const Config& c : configs) setups.push_back(make_setup(c));
  for (size_t c = 0; c < configs.size(); ++c) step(setups[c], configs[c], x, y);  // warm-up
  for (int r = 0; r < steps; ++r)
    for (size_t c = 0; c < configs.size(); ++c) {
      if (configs[c].backend == Backend::reference_argmin && r > 0) continue;  // one step: it is slow
      const StepTime t = step(setups[c], configs[c], x, y);
      std::printf("%s %.3f %ld\n", configs[c].name.c_str(), t.ms, t.faults);
    }
  return 0;
}

// --memory-only NAME: three steps of one configuration, then the peak RSS in KiB.
int run_memory_child(const std::string& name, int batch) {
  for (const Config& c : all_configs()) {
    if (c.name != name) continue;
    if (c.fastest) apot::train::keep_freed_memory();
    torch::manual_seed(1);
    const torch::Tensor x = torch::randn({batch, 3, 32, 32});
    const torch::Tensor y = torch::randint(0, 10, {batch}, torch::kLong);
    Setup s = make_setup(c);
    for (int r = 0; r < 3; ++r) step(s, c, x, y);
    rusage usage{};
    getrusage(RUSAGE_SELF, &usage);
    std::printf("%ld\n", usage.ru_maxrss);
    return 0;
  }
  return 1;
}

// --rank-child: one rank of a data-parallel apot-w4a4-fastest job (RANK, WORLD_SIZE,
// MASTER_PORT set by the parent); rank 0 prints "MS" per step.
int run_rank_child(int steps, int batch) {
  const apot::train::DistributedOptions options = apot::train::distributed_from_env();
  apot::train::Communicator comm(options);
  apot::train::keep_freed_memory();
  const Config c = *std::find_if(all_configs().begin(), all_configs().end(),
                                 [](const Config& k) { return k.name == "apot-w4a4-fastest"; });
  Setup s = make_setup(c);
  std::vector<torch::Tensor> state = s.model->parameters();
  for (const auto& b : s.model->buffers()) state.push_back(b);
  comm.broadcast(state);
  comm.attach_gradients(s.model->parameters());
  torch::manual_seed(1 + options.rank);
  const torch::Tensor x = torch::randn({batch, 3, 32, 32});
  const torch::Tensor y = torch::randint(0, 10, {batch}, torch::kLong);
  step(s, c, x, y, &comm);  // warm-up
  for (int r = 0; r < steps; ++r) {
    const StepTime t = step(s, c, x, y, &comm);
    if (options.rank == 0) std::printf("%.3f\n", t.ms);
  }
  return 0;
}

std::vector<double> parse_numbers(const std::string& text) {
  std::vector<double> out;
  const char* p = text.c_str();
  char* end = nullptr;
  for (double v = std::strtod(p, &end); end != p; v = std::strtod(p, &end)) {
    out.push_back(v);
    p = end;
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  int rounds = 3, steps = 3, threads = 2, batch = 128;
  bool with_reference = true, with_ranks = true, rank_child = false;
  std::string memory_only, child;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--rounds" && i + 1 < argc) rounds = std::stoi(argv[++i]);
    else if (a == "--steps" && i + 1 < argc) steps = std::stoi(argv[++i]);
    else if (a == "--threads" && i + 1 < argc) threads = std::stoi(argv[++i]);
    else if (a == "--batch" && i + 1 < argc) batch = std::stoi(argv[++i]);
    else if (a == "--no-reference") with_reference = false;
    else if (a == "--no-ranks") with_ranks = false;
    else if (a == "--memory-only" && i + 1 < argc) memory_only = argv[++i];
    else if (a == "--child" && i + 1 < argc) child = argv[++i];
    else if (a == "--rank-child") rank_child = true;
    else {
      std::fprintf(stderr, "bench_train_step: unknown argument '%s'\n", a.c_str());
      return 2;
    }
  }
  torch::set_num_threads(threads);
  if (!memory_only.empty()) return run_memory_child(memory_only, batch);
  if (!child.empty()) return run_child(child, steps, batch);
  if (rank_child) return run_rank_child(steps, batch);

  const auto& features = apot::kernels::cpu_features();
  std::printf(
      "bench_train_step: ResNet-20 (option A), batch %d, 3x32x32, %d threads; %d rounds x %d steps per path "
      "(child processes alternating)\n",
      batch, threads, rounds, steps);
  std::printf("  CPU: %s (%s)\n", cpu_name().c_str(), features.describe().c_str());
  std::printf("  -fastest rows: convolutions in %s\n", apot::qat::cpu_has_native_bf16()
                                                           ? "bfloat16 (AVX512_BF16)"
                                                           : "float32 (no AVX512_BF16: the same as -channels-last)");
  const std::string common = " --steps " + std::to_string(steps) + " --batch " + std::to_string(batch) + " --threads " +
                             std::to_string(threads);
  std::map<std::string, std::vector<double>> ms, faults;
  std::vector<double> rank_ms;
  std::string ranks_failed;
  for (int r = 0; r < rounds; ++r) {
    for (const char* path : {"today", "fastest", "reference"}) {
      if (std::string(path) == "reference" && (!with_reference || r > 0)) continue;
      std::istringstream lines(output_of(self() + " --child " + path + common));
      std::string name;
      double t;
      long f;
      while (lines >> name >> t >> f) {
        ms[name].push_back(t);
        faults[name].push_back(double(f));
      }
    }
    if (!with_ranks || threads != 2 || !ranks_failed.empty()) continue;
    // The same global batch: 2 processes x 1 thread x batch/2 against apot-w4a4-fastest.
    const std::string env =
        "MASTER_ADDR=127.0.0.1 MASTER_PORT=" + std::to_string(apot::train::free_local_port()) + " WORLD_SIZE=2 ";
    const std::string args = " --rank-child --threads 1 --batch " + std::to_string(batch / 2) + " --steps " +
                             std::to_string(steps) + " 2>&1";
    FILE* other = popen((env + "RANK=1 LOCAL_RANK=1 " + self() + args).c_str(), "r");
    const std::string out = output_of(env + "RANK=0 LOCAL_RANK=0 " + self() + args);
    std::string other_out;
    if (other) {
      char buf[4096];
      for (size_t n; (n = std::fread(buf, 1, sizeof buf, other)) > 0;) other_out.append(buf, n);
      pclose(other);
    }
    const std::vector<double> times = parse_numbers(out);
    if (times.size() != size_t(steps)) ranks_failed = out + other_out;
    rank_ms.insert(rank_ms.end(), times.begin(), times.end());
  }
  if (ms["fp32"].empty()) {
    std::fprintf(stderr, "bench_train_step: the child processes printed nothing\n");
    return 1;
  }
  const double peak = fp32_peak_gfma();
  const double gmacs = step_gmacs(batch);
  std::printf(
      "  FP32 peak (measured, %s FMA chains): %.1f G FMA/s per thread, %.1f for %d threads; a step's "
      "convolutions: %.2f G MAC\n",
      features.avx512f ? "512-bit" : "256-bit", peak, peak * threads, threads, gmacs);
  const double fp = median(ms["fp32"]);
  for (const Config& c : all_configs()) {
    if (ms[c.name].empty()) continue;
    const long rss = std::atol(output_of(self() + " --memory-only " + c.name + " --batch " + std::to_string(batch) +
                                         " --threads " + std::to_string(threads))
                                   .c_str());
    const double t = median(ms[c.name]);
    std::printf(
        "  %-23s step median %8.1f ms  %5.2fx fp32  %5.1f %% of FP32 peak  peak RSS %6.1f MiB  %6.0f page "
        "faults/step  (%zu steps)\n",
        c.name.c_str(), t, t / fp, peak > 0 ? 100.0 * gmacs / (t / 1e3) / (peak * threads) : 0.0, rss / 1024.0,
        median(faults[c.name]), ms[c.name].size());
  }
  if (with_ranks && threads == 2) {
    if (ranks_failed.empty()) {
      const double t2 = median(rank_ms), t1 = median(ms["apot-w4a4-fastest"]);
      std::printf(
          "  apot-w4a4-fastest, global batch %d: 1 rank x 2 threads %.1f ms (%.0f img/s), 2 ranks x 1 thread "
          "x batch %d %.1f ms (%.0f img/s): 2x1 / 1x2 speed %.2fx  (%zu steps)\n",
          batch, t1, batch / (t1 / 1e3), batch / 2, t2, batch / (t2 / 1e3), t1 / t2, rank_ms.size());
    } else {
      std::printf("  2 ranks x 1 thread: not measured (%s)\n", ranks_failed.c_str());
    }
  }
  return 0;
}
