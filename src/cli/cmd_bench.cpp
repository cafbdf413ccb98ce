// `apot bench model.apot --batch 1,32 --threads 1,2 [--json]`: the integer engine against
// LibTorch FP32 (oneDNN convolutions, eval mode, no grad) on the same architecture, measured
// side by side (interleaved repetitions, medians).
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <nlohmann/json.hpp>

#include "apot/qat/resnet.h"
#include "apot/runtime/model.h"
#include "commands.h"

namespace apot::cli {
namespace {

struct BenchOptions {
  std::string model;
  std::vector<int> batches{1, 32}, threads{1, 2};
  int reps = 0;
  bool json = false;
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

template <typename F>
double time_ms(F f) {
  const auto t0 = std::chrono::steady_clock::now();
  f();
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

void run_bench(const BenchOptions& o) {
  const runtime::Model engine = runtime::Model::load(o.model);
  const runtime::ModelInfo& info = engine.info();
  const auto& spec = info.spec;
  int64_t macs = 0;
  for (const auto& l : levels::enumerate_layers(spec, info.height, info.width)) macs += l.macs();
  qat::ResNet fp = qat::make_resnet(spec.name, spec.in_channels, spec.num_classes, spec.shortcut);
  fp->eval();
  torch::NoGradGuard no_grad;
  nlohmann::json results = nlohmann::json::array();
  if (!o.json)
    fmt::print("{} {}x{} ({:.1f} M MACs per image), GEMM path {}\n", spec.name, info.height, info.width, macs / 1e6,
               kernels::to_string(kernels::default_gemm_isa()));
  for (int threads : o.threads)
    for (int batch : o.batches) {
      torch::set_num_threads(threads);
      const torch::Tensor x = torch::randn({batch, spec.in_channels, info.height, info.width});
      runtime::RunOptions ro;
      ro.threads = threads;
      const int reps = o.reps > 0 ? o.reps : std::max(5, 200 / batch);
      std::vector<double> engine_ms, torch_ms;
      engine.run(x.data_ptr<float>(), batch, ro);  // warm-up
      fp(x);
      for (int r = 0; r < reps; ++r) {
        engine_ms.push_back(time_ms([&] { engine.run(x.data_ptr<float>(), batch, ro); }));
        torch_ms.push_back(time_ms([&] { fp(x); }));
      }
      const double e = median(engine_ms), t = median(torch_ms);
      const double gmacs = macs * double(batch) / (e * 1e-3) / 1e9;
      results.push_back({{"batch", batch}, {"threads", threads}, {"engine_ms", e}, {"libtorch_fp32_ms", t},
                         {"speedup_vs_fp32", t / e}, {"engine_gmacs_per_s", gmacs}, {"reps", reps}});
      if (!o.json)
        fmt::print("  batch {:>3}, {} thread(s): engine {:8.3f} ms, LibTorch FP32 {:8.3f} ms -> {:5.2f}x; engine {:6.1f} G MAC/s\n",
                   batch, threads, e, t, t / e, gmacs);
    }
  if (o.json)
    fmt::print("{}\n", nlohmann::json{{"model", o.model}, {"arch", spec.name}, {"macs_per_image", macs},
                                      {"gemm", kernels::to_string(kernels::default_gemm_isa())}, {"results", results}}
                           .dump());
}

}  // namespace

void register_bench(CLI::App& app) {
  auto o = std::make_shared<BenchOptions>();
  CLI::App* cmd = app.add_subcommand("bench", "Time the integer engine against LibTorch FP32 on the same network");
  cmd->add_option("model", o->model, ".apot file")->required()->check(CLI::ExistingFile);
  cmd->add_option("--batch", o->batches, "batch sizes, e.g. 1,32")->delimiter(',')->capture_default_str();
  cmd->add_option("--threads", o->threads, "thread counts, e.g. 1,2")->delimiter(',')->capture_default_str();
  cmd->add_option("--reps", o->reps, "repetitions per configuration (default: about 200 images)");
  cmd->add_flag("--json", o->json, "print one JSON object");
  cmd->callback([o] { run_bench(*o); });
}

}  // namespace apot::cli
