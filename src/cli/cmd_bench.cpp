// `apot bench model.apot --batch 1,32 --threads 1,2 [--back-to-back N] [--layers] [--json]`: the
// integer engine against LibTorch FP32 (its module forward, and a forward calling oneDNN directly)
// and against oneDNN int8 running the same network, measured side by side: in each repetition
// every contender runs once after a cache flush (or N times in a row, the first left out), in
// turn; medians over the repetitions.
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <vector>

#include <unistd.h>

#include "apot/apot.h"
#include "apot/kernels/gemm.h"
#include "apot/qat/network.h"
#include "apot/runtime/inspect.h"
#include "apot/runtime/model.h"
#include "baselines.h"
#include "commands.h"

namespace apot::cli {
namespace {

struct BenchOptions {
  std::string model;
  std::vector<int> batches{1, 32}, threads{1, 2};
  int reps = 0;
  int back_to_back = 1;  // runs of each contender per turn; from 2 on, only the warm ones count
  bool layers = false;
  bool json = false;
  std::string tune;
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

// Evicts the caches before a cold run: writes and reads a buffer of twice the last-level cache
// (at least 64 MiB), so that every contender starts from memory whatever ran before it. Without
// it a contender found the caches as the one before it had left them, and a contender after a
// small one (the engine after oneDNN int8) had an advantage over one after a large one.
class CacheFlush {
 public:
  CacheFlush() {
    const long l3 = sysconf(_SC_LEVEL3_CACHE_SIZE);
    buffer_.assign(std::max<size_t>(size_t(64) << 20, l3 > 0 ? 2 * size_t(l3) : 0) / sizeof(uint64_t), 1);
  }
  void operator()() {
    uint64_t sum = 0;
    for (uint64_t& x : buffer_) sum += x++;
    sink_ = sum;
  }

 private:
  std::vector<uint64_t> buffer_;
  volatile uint64_t sink_ = 0;
};

// `batch` random 8-bit images, normalised as the model expects (what a data set of images gives
// the engine; the baselines' speed does not depend on the values).
torch::Tensor random_images(const runtime::ModelInfo& info, int batch) {
  const torch::Tensor pixels =
      torch::randint(0, 256, {batch, info.channels, info.height, info.width}).to(torch::kFloat);
  const auto shape = std::vector<int64_t>{1, info.channels, 1, 1};
  const torch::Tensor mean = torch::tensor(info.mean).reshape(shape), std = torch::tensor(info.std).reshape(shape);
  return ((pixels / 255.0f - mean) / std).contiguous();
}

struct Contender {
  std::string name;
  std::function<void()> run;
  std::vector<double> ms;
};

// Per-layer time of the engine (batch 1, one thread) against the measured peak, and beside it
// oneDNN int8's time for the same convolution where the baseline is built.
nlohmann::json layer_report(const runtime::Model& engine, int reps, double peak, bool print) {
  const runtime::ModelInfo& info = engine.info();
  const runtime::Inspector inspect(engine);
  const graph::Graph& g = inspect.graph();
  const size_t layers = inspect.layer_count();
  const std::vector<int> first = g.first_layers();
  // One thread for both: oneDNN fixes a primitive's thread count when it is created.
  torch::set_num_threads(1);
  const torch::Tensor x = random_images(info, 1);
  std::vector<std::vector<double>> samples(layers);
  runtime::EngineOptions o;
  o.tuned = true;  // as Model::run runs it
  for (int r = 0; r < std::max(reps, 5); ++r) {
    std::vector<double> seconds(layers, 0.0);
    o.layer_seconds = &seconds;
    inspect.run(x.data_ptr<float>(), 1, o);
    for (size_t i = 0; i < layers; ++i) samples[i].push_back(seconds[i]);
  }
  std::vector<std::vector<double>> int8;
  if (OnednnInt8::available()) {
    try {
      int8 = OnednnInt8(g, 1).layer_samples(std::max(reps, 5));
    } catch (const std::exception&) {  // the contender is left out (said above)
    }
  }
  nlohmann::json out = nlohmann::json::array();
  if (print)
    fmt::print(
        "  per layer (batch 1, 1 thread; peak {:.1f} G MAC/s){}:\n"
        "  (the kernel each layer runs, chosen by measurement when the model was loaded: {}. Winograd:\n"
        "  F(2,3), four products where the direct convolution takes six; its rate counts the direct\n"
        "  convolution's MACs and can pass the peak.)\n",
        peak, int8.empty() ? "" : "; oneDNN int8 on the right", inspect.tuning());
  double total_ms = 0, int8_total_ms = 0;
  for (size_t i = 0; i < layers; ++i) {
    const int node = inspect.layer_node(i);
    const graph::Node& l = g[size_t(node)];
    if (l.op != graph::Op::conv) continue;  // linear layers are not timed
    const graph::Shape& in = g.input_shape_of(node);
    const bool is_first = std::find(first.begin(), first.end(), node) != first.end();
    const int64_t layer_macs = g.macs(node);
    const double ms = median(samples[i]) * 1e3;
    const double gmacs = layer_macs / (ms * 1e-3) / 1e9;
    total_ms += ms;
    const bool quantized = l.quant.quantized();
    const runtime::ConvVariant variant =
        quantized ? inspect.conv_variant(i, o) : runtime::ConvVariant{o.isa, {false, false}};
    const bool winograd = variant.schedule.winograd;
    const std::string kernel = quantized ? inspect.conv_variant_name(i, o) : inspect.pixel_layer_kernel(i, o);
    nlohmann::json row{
        {"layer", l.name},     {"kernel", kernel},     {"ms", ms},
        {"macs", layer_macs},  {"gmacs_per_s", gmacs}, {"share_of_peak", peak > 0 && !is_first ? gmacs / peak : 0.0},
        {"winograd", winograd}};
    std::string theirs;
    if (!int8.empty() && !int8[i].empty()) {
      const double ims = median(int8[i]) * 1e3;
      int8_total_ms += ims;
      row["onednn_int8_ms"] = ims;
      theirs = fmt::format(" | {:8.4f} ms {:6.1f} G MAC/s", ims, layer_macs / (ims * 1e-3) / 1e9);
    }
    out.push_back(row);
    if (print)
      fmt::print("    {:<24} {:>4}x{:<4} {}x{} /{} {:>4}->{:<4} {:8.4f} ms {:7.1f} G MAC/s {:>15} {:<20}{}\n", l.name,
                 in.height, in.width, l.kernel, l.kernel, l.stride, in.channels, l.out_channels, ms, gmacs,
                 is_first   ? std::string("(first layer)")
                 : peak > 0 ? fmt::format("{:5.1f} % of peak", 100 * gmacs / peak)
                            : "",
                 kernel, theirs);
  }
  if (print)
    fmt::print("    convolutions together: {:.3f} ms{}\n", total_ms,
               int8.empty() ? "" : fmt::format(" (oneDNN int8: {:.3f} ms)", int8_total_ms));
  return out;
}

void run_bench(const BenchOptions& o) {
  apply_tune_option(o.tune);
  const auto load_start = std::chrono::steady_clock::now();
  const runtime::Model engine = runtime::Model::load(o.model);
  const double load_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - load_start).count();
  const runtime::ModelInfo& info = engine.info();
  const graph::Graph& g = runtime::Inspector(engine).graph();
  const std::string tuning = runtime::Inspector(engine).tuning();
  const bool tuned = tuning != "off" && tuning != "nothing to choose";
  // The same model through the C API (apot/apot.h), to show what that layer costs.
  apot_model* c_model = nullptr;
  if (apot_model_load(o.model.c_str(), &c_model) != APOT_OK) throw std::runtime_error(apot_last_error());
  const std::unique_ptr<apot_model, void (*)(apot_model*)> c_model_owner(c_model, apot_model_free);
  int64_t macs = 0;
  for (int i : g.weight_layers()) macs += g.macs(i);
  const kernels::GemmIsa isa = kernels::default_gemm_isa();
  const double peak = kernels::measure_peak_gmacs(isa);
  qat::Network fp = qat::make_network(g);
  fp->eval();
  torch::NoGradGuard no_grad;
  std::optional<TorchOnednnFp32> direct;
  if (TorchOnednnFp32::available()) direct.emplace(g);
  std::string dnnl_isa = "not built";
  nlohmann::json results = nlohmann::json::array();
  if (!o.json) {
    fmt::print("{} {}x{} ({:.1f} M MACs per image), engine path {}{}, its peak {:.1f} G MAC/s per thread\n", g.arch,
               info.height, info.width, macs / 1e6, kernels::to_string(isa),
               kernels::amx_enabled() ? " (AMX tiles where measured faster)" : "", peak);
    fmt::print("  loaded in {:.0f} ms; kernels chosen per layer by measurement (APOT_TUNE): {}\n", load_ms, tuning);
    if (o.back_to_back > 1)
      fmt::print(
          "  (each contender runs {} times in a row per turn; the first run of a turn is left out: warm caches)\n",
          o.back_to_back);
    else fmt::print("  (cold: the caches are flushed before each run of each contender)\n");
  }
  CacheFlush flush;
  for (int threads : o.threads)
    for (int batch : o.batches) {
      torch::set_num_threads(threads);
      const torch::Tensor x = random_images(info, batch);
      runtime::RunOptions ro;
      ro.threads = threads;
      apot_run_options co;
      apot_run_options_init(&co);
      co.threads = threads;
      std::vector<float> logits(size_t(batch) * size_t(info.num_classes));
      const size_t input_count = size_t(x.numel());
      std::vector<Contender> c;
      c.push_back({"engine", [&] { engine.run(x.data_ptr<float>(), batch, logits.data(), ro); }, {}});
      c.push_back({"engine_c_api",
                   [&] {
                     if (apot_model_run(c_model, x.data_ptr<float>(), input_count, batch, logits.data(), logits.size(),
                                        &co) != APOT_OK)
                       throw std::runtime_error(apot_last_error());
                   },
                   {}});
      c.push_back({"libtorch_fp32_module", [&] { fp(x); }, {}});
      std::optional<OnednnInt8> int8;
      if (OnednnInt8::available()) {
        try {  // a step oneDNN cannot build for this network leaves the contender out, not the run
          int8.emplace(g, batch);
          dnnl_isa = int8->isa();
        } catch (const std::exception& e) {
          if (!o.json) fmt::print("  oneDNN int8 left out: it cannot run this network ({})\n", e.what());
        }
      }
      if (int8) c.push_back({"onednn_int8_weight_layers", [&] { int8->run_weight_layers(threads); }, {}});
      // The same engine with the path's default kernels (an explicit path runs no tuned variant).
      runtime::RunOptions untuned = ro;
      untuned.isa = runtime::isa_of(isa);
      if (tuned)
        c.push_back({"engine_untuned", [&] { engine.run(x.data_ptr<float>(), batch, logits.data(), untuned); }, {}});
      if (direct) c.push_back({"libtorch_fp32_onednn", [&] { direct->forward(x); }, {}});
      if (int8) c.push_back({"onednn_int8", [&] { int8->run(threads); }, {}});
      const int reps = o.reps > 0 ? o.reps : std::max(7, 200 / batch);
      for (auto& k : c) k.run();  // warm-up
      for (int r = 0; r < reps; ++r)
        for (auto& k : c) {
          if (o.back_to_back == 1) flush();
          const double first = time_ms(k.run);
          if (o.back_to_back == 1) k.ms.push_back(first);  // from memory: the caches flushed
          for (int again = 1; again < o.back_to_back; ++again) k.ms.push_back(time_ms(k.run));  // its own
        }
      nlohmann::json row{{"batch", batch}, {"threads", threads}, {"reps", reps}, {"back_to_back", o.back_to_back}};
      for (auto& k : c) row[k.name + "_ms"] = median(k.ms);
      const double e = row["engine_ms"];
      double fp32 = row["libtorch_fp32_module_ms"];
      if (direct) fp32 = std::min(fp32, row["libtorch_fp32_onednn_ms"].get<double>());
      row["libtorch_fp32_best_ms"] = fp32;
      row["c_api_overhead"] = row["engine_c_api_ms"].get<double>() / e - 1.0;
      row["speedup_vs_fp32"] = fp32 / e;
      row["engine_gmacs_per_s"] = macs * double(batch) / (e * 1e-3) / 1e9;
      if (int8) {
        row["speedup_vs_onednn_int8"] = row["onednn_int8_ms"].get<double>() / e;
        row["speedup_vs_onednn_int8_weight_layers"] = row["onednn_int8_weight_layers_ms"].get<double>() / e;
      }
      if (tuned) row["speedup_vs_untuned"] = row["engine_untuned_ms"].get<double>() / e;
      results.push_back(row);
      if (!o.json) {
        fmt::print(
            "  batch {:>3}, {} thread(s): engine {:8.3f} ms | LibTorch FP32 module {:8.3f} ms, via oneDNN {} | "
            "oneDNN int8 {} -> {:5.2f}x FP32 (best), {} int8; engine {:6.1f} G MAC/s; through the C API "
            "{:8.3f} ms ({:+.2f} %)\n",
            batch, threads, e, row["libtorch_fp32_module_ms"].get<double>(),
            direct ? fmt::format("{:8.3f} ms", row["libtorch_fp32_onednn_ms"].get<double>()) : "n/a",
            int8 ? fmt::format("{:8.3f} ms", row["onednn_int8_ms"].get<double>()) : "n/a", fp32 / e,
            int8 ? fmt::format("{:5.2f}x", row["speedup_vs_onednn_int8"].get<double>()) : "n/a",
            row["engine_gmacs_per_s"].get<double>(), row["engine_c_api_ms"].get<double>(),
            100 * row["c_api_overhead"].get<double>());
        if (int8)
          fmt::print(
              "    oneDNN int8 with its convolution and linear layers only (not the pooling, concat, shuffle and "
              "slice steps between them): {:8.3f} ms ({:.2f}x)\n",
              row["onednn_int8_weight_layers_ms"].get<double>(),
              row["speedup_vs_onednn_int8_weight_layers"].get<double>());
        if (tuned)
          fmt::print(
              "    the path's default kernels instead of the measured ones: {:8.3f} ms ({:.3f}x the tuned engine's "
              "time)\n",
              row["engine_untuned_ms"].get<double>(), row["speedup_vs_untuned"].get<double>());
      }
    }
  nlohmann::json report{
      {"model", o.model},         {"arch", g.arch},         {"macs_per_image", macs}, {"gemm", kernels::to_string(isa)},
      {"peak_gmacs_per_s", peak}, {"onednn_isa", dnnl_isa}, {"results", results},     {"load_ms", load_ms},
      {"tuning", tuning}};
  if (!o.json) fmt::print("  oneDNN int8 dispatches to: {}\n", dnnl_isa);
  if (o.layers) report["layers"] = layer_report(engine, o.reps > 0 ? o.reps : 50, peak, !o.json);
  if (o.json) fmt::print("{}\n", report.dump());
}

}  // namespace

void register_bench(CLI::App& app) {
  auto o = std::make_shared<BenchOptions>();
  CLI::App* cmd =
      app.add_subcommand("bench", "Time the integer engine against LibTorch FP32 and oneDNN int8 on the same network");
  cmd->add_option("model", o->model, ".apot file")->required()->check(CLI::ExistingFile);
  cmd->add_option("--batch", o->batches, "batch sizes, e.g. 1,32")
      ->delimiter(',')
      ->capture_default_str()
      ->check(CLI::Range(1, 4096));
  cmd->add_option("--threads", o->threads, "thread counts, e.g. 1,2")
      ->delimiter(',')
      ->capture_default_str()
      ->check(CLI::Range(1, 1024));
  cmd->add_option("--reps", o->reps, "repetitions per configuration (default: about 200 images)")
      ->check(CLI::Range(1, 100000));
  cmd->add_option("--back-to-back", o->back_to_back,
                  "runs of each contender per turn; 1: each run starts from flushed caches; with 2 or more, "
                  "the first of each turn (after the other contenders have filled the caches) is left out")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000));
  cmd->add_flag("--layers", o->layers, "also report the engine's time and G MAC/s per layer (and oneDNN int8's)");
  cmd->add_flag("--json", o->json, "print one JSON object");
  add_tune_option(cmd, o->tune);
  cmd->callback([o] { run_bench(*o); });
}

void add_tune_option(CLI::App* cmd, std::string& tune) {
  cmd->add_option("--tune", tune,
                  "how the engine chooses each layer's kernel when it loads the model: 1 measures what its cache "
                  "(APOT_TUNE_CACHE) lacks, force measures all, 0 runs the defaults (default: APOT_TUNE, else 1)")
      ->check(CLI::IsMember({"0", "1", "force"}));
}

void apply_tune_option(const std::string& tune) {
  if (!tune.empty()) setenv("APOT_TUNE", tune.c_str(), 1);
}

}  // namespace apot::cli
