// The choice of each quantised convolution's kernel by measurement (docs/KERNELS.md "Tuning"):
// kernels tuned on one CPU are not the fastest on another (AVX-512 on Zen 4 and Zen 5 and on
// Intel Xeons differs in ports, widths and broadcast costs), so, as oneDNN, FBGEMM and XNNPACK
// choose per microarchitecture, the engine times the variants that apply to each layer (the
// paths this CPU runs, and Winograd F(2,3) or the direct kernel) on the layer's own shape and
// epilogue when a model is loaded, and keeps the fastest. Every variant gives the same bits
// (tests/kernels and tests/runtime compare each with the scalar reference), so the choice never
// changes a prediction, only the time.
//
// APOT_TUNE: 1 (default) reads earlier measurements from the cache file and measures (and
// caches) only layers it does not hold; force measures every layer again; 0 runs the path's
// default kernels (RunOptions::isa). The cache, one JSON file keyed by the CPU model
// (kernels::cpu_model()) and each layer's shape, is APOT_TUNE_CACHE if set (empty: no file),
// else $XDG_CACHE_HOME/apot/kernels.json or ~/.cache/apot/kernels.json. It is written
// atomically; one that cannot be read or written is measured around (it is only a cache).
#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <set>
#include <stdexcept>

#include "apot/kernels/cpu.h"
#include "engine.h"

namespace apot::runtime {
namespace {

enum class TuneMode { off, cached, force };

TuneMode tune_mode() {
  const char* v = std::getenv("APOT_TUNE");
  const std::string s = v ? v : "";
  if (s.empty() || s == "1") return TuneMode::cached;
  if (s == "0") return TuneMode::off;
  if (s == "force") return TuneMode::force;
  throw std::invalid_argument("APOT_TUNE=" + s + " is not one of 0, 1, force");
}

std::string cache_path() {
  if (const char* p = std::getenv("APOT_TUNE_CACHE")) return p;
  if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x) return std::string(x) + "/apot/kernels.json";
  if (const char* h = std::getenv("HOME"); h && *h) return std::string(h) + "/.cache/apot/kernels.json";
  return "";
}

// split_threads: the thread count at which one_thread was measured (1: not measured).
nlohmann::json to_json(ConvVariant v, int split_threads) {
  nlohmann::json j = {{"isa", kernels::to_string(v.isa)},
                      {"winograd", v.schedule.winograd},
                      {"rows_first", v.schedule.rows_first},
                      {"amx", v.schedule.amx}};
  if (split_threads > 1) j["one_thread"] = v.one_thread, j["split_threads"] = split_threads;
  return j;
}

bool same(const nlohmann::json& c, ConvVariant v) {
  return c.is_object() && c.value("isa", "") == kernels::to_string(v.isa) &&
         c.value("winograd", true) == v.schedule.winograd && c.value("rows_first", false) == v.schedule.rows_first &&
         c.value("amx", false) == v.schedule.amx;
}

// The variants that can run layer l (the first is the path's default): each path this CPU runs
// (only APOT_GEMM_ISA's where it is set), and on AVX-512 VNNI the direct kernel as well where
// Winograd applies, the direct kernel row by row (ConvSchedule::rows_first), and AMX tiles where the CPU has them. Not
// AVX2 where its int16 pair sums could saturate (conv_u8s8 would run the scalar reference), nor AVX-VNNI for depthwise
// layers (it runs AVX2's depthwise kernel).
std::vector<ConvVariant> candidates(const engine::Layer& l) {
  std::vector<kernels::GemmIsa> isas;
  if (const char* forced = std::getenv("APOT_GEMM_ISA"); forced && *forced) isas = {kernels::default_gemm_isa()};
  else isas.assign(kernels::supported_gemm_isas().rbegin(), kernels::supported_gemm_isas().rend());
  const bool depthwise = l.packed.depthwise();
  std::vector<ConvVariant> out;
  for (kernels::GemmIsa isa : isas) {
    if (isa == kernels::GemmIsa::scalar && isas.size() > 1) continue;
    if (depthwise && isa == kernels::GemmIsa::avx_vnni) continue;
    if (!depthwise && isa == kernels::GemmIsa::avx2 && 2L * l.max_code * l.packed.max_abs > 32767) continue;
    out.push_back({isa, {true, false}});
    if (l.winograd_applies(isa)) out.push_back({isa, {false, false}});
    if (l.rows_first_applies(isa)) out.push_back({isa, {false, true}});
    if (l.amx_applies(isa)) out.push_back({isa, {false, false, true}});
  }
  return out;
}

nlohmann::json read_cache(const std::string& path) {
  std::ifstream in(path);
  if (!in) return nlohmann::json::object();
  const nlohmann::json j = nlohmann::json::parse(in, nullptr, false);
  return j.is_object() && j.value("version", 0) == 4 ? j : nlohmann::json::object();
}

// False if it could not be written (the choices then hold for this load only).
bool write_cache(const std::string& path, const nlohmann::json& j) {
  std::error_code ec;
  std::filesystem::create_directories(std::filesystem::path(path).parent_path(), ec);
  const std::string tmp = path + ".tmp" + std::to_string(::getpid());
  {
    std::ofstream out(tmp);
    out << j.dump(1) << "\n";
    if (!out.good()) return std::filesystem::remove(tmp, ec), false;
  }
  std::filesystem::rename(tmp, path, ec);
  if (ec) return std::filesystem::remove(tmp, ec), false;
  return true;
}

// The index of the fastest of `runs`: rounds of every run in turn (the first a warm-up), the
// fastest time of each counting; about `budget` seconds, 3 to `max_rounds` rounds. None where the
// warm-up round alone takes over `give_up` seconds. `prepare`, where given, runs (untimed) before
// each run.
std::optional<size_t> fastest(const std::vector<std::function<void()>>& runs, double budget, int max_rounds,
                              double give_up = 1e30, const std::function<void()>& prepare = {}) {
  auto seconds = [&](const std::function<void()>& f) {
    if (prepare) prepare();
    const auto t0 = std::chrono::steady_clock::now();
    f();
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };
  double round = 0;
  for (const auto& f : runs) round += seconds(f);
  if (round > give_up) return std::nullopt;
  std::vector<double> best(runs.size(), 1e30);
  const int rounds = std::clamp(int(budget / std::max(round, 1e-7)), 3, max_rounds);
  for (int r = 0; r < rounds; ++r)
    for (size_t i = 0; i < runs.size(); ++i) best[i] = std::min(best[i], seconds(runs[i]));
  return size_t(std::min_element(best.begin(), best.end()) - best.begin());
}

}  // namespace

// What a layer's speed depends on: its shape, input codes and epilogue.
std::string Model::Impl::layer_key(size_t l, const Step& s) const {
  const Layer& layer = layers[l];
  const kernels::PackedConv& w = layer.packed;
  const graph::Shape in = layer_input(l);
  std::string k = "conv " + std::to_string(in.height) + "x" + std::to_string(in.width) + " cs" + std::to_string(w.cs) +
                  " n" + std::to_string(w.out_channels) + " k" + std::to_string(w.kernel) + " s" +
                  std::to_string(w.stride) + " p" + std::to_string(w.padding) + (w.depthwise() ? " dw" : "") +
                  (w.wino.empty() ? "" : " wino");
  if (!layer.acc_offset.empty()) k += " signed";
  if (s.residual >= 0) k += " residual";
  if (s.relu) k += " relu";
  if (s.out >= 0) k += " values";
  if (s.codes_for >= 0) k += " codes" + std::to_string(layers[size_t(s.codes_for)].input.thresholds.size());
  return k;
}

void Model::Impl::tune() {
  const TuneMode mode = tune_mode();
  if (mode == TuneMode::off) return;
  const std::string path = cache_path();
  nlohmann::json cache = path.empty() ? nlohmann::json::object() : read_cache(path);
  // 2: AMX variants (session 26); 3: vpermb in the epilogue (session 27); 4: the AMX epilogue
  // inlined (session 28)
  cache["version"] = 4;
  nlohmann::json& mine = cache[kernels::cpu_model()];
  if (!mine.is_object()) mine = nlohmann::json::object();

  std::unique_ptr<Workspace> ws;  // for measurements
  std::mt19937 random(7);
  EngineOptions o;  // one thread: the kernel is chosen per layer, for a single image
  // Whether splitting a layer over threads pays (small layers lose more to starting the threads
  // than they gain: ResNet-20's on a 2-core VM) is measured at OpenMP's thread count, and holds
  // for runs of an image on any number of threads (conv_variant_name says ", one thread").
  EngineOptions split;
  split.threads = omp_get_max_threads();
  int measured = 0, cached = 0;
  std::set<std::string> now;  // the keys measured here
  for (const Step& s : steps) {
    if (s.kind != StepKind::conv_codes) continue;
    Layer& l = layers[size_t(s.layer)];
    const std::vector<ConvVariant> options = candidates(l);
    if (options.size() < 2 && split.threads < 2) continue;  // nothing to choose
    const std::string key = layer_key(size_t(s.layer), s);
    // The file's choices (unless forced), or one measured for a layer of the same kind above;
    // the split measured again where it was measured at another thread count.
    bool split_known = split.threads < 2;
    l.variant.reset();
    if ((mode == TuneMode::cached || now.count(key)) && mine.contains(key)) {
      const nlohmann::json& c = mine[key];
      const auto it = std::find_if(options.begin(), options.end(), [&](ConvVariant v) { return same(c, v); });
      if (it != options.end()) {
        l.variant = *it;
        if (!split_known && c.value("split_threads", 0) == split.threads) {
          l.variant->one_thread = c.value("one_thread", false);
          split_known = true;
        }
        if (split_known) {
          ++cached;
          continue;
        }
      }
    }
    if (!ws) ws = acquire();
    // The layer's input: random codes up to its largest (the interior only: the border holds
    // the padding's code, which the measurement must not change).
    const kernels::CodeImage& in = ws->codes[size_t(s.layer)];
    std::uniform_int_distribution<int> code(0, l.max_code);
    for (int y = 0; y < in.h; ++y)
      for (int x = 0; x < in.w; ++x)
        for (int c = 0; c < l.packed.in_channels; ++c) in.pixel(y, x)[c] = uint8_t(code(random));
    float* out = s.out >= 0 ? ws->buffers[size_t(s.out)].data() : nullptr;
    // One run of the layer with options e and variant v; about 20 ms per choice, 3 to 25 rounds.
    auto run = [&](const EngineOptions& e, ConvVariant v) { return [&, p = &e, v] { run_conv(s, *ws, out, *p, v); }; };
    if (!l.variant) {
      std::vector<std::function<void()>> runs;
      for (ConvVariant v : options) runs.push_back(run(o, v));
      l.variant = options[options.size() > 1 ? *fastest(runs, 0.02, 25) : 0];
    }
    // The chosen kernel on one thread, or the path's default split over the threads. In a network
    // the layer's input was just written by the threads of the layer before, each its own rows,
    // so each run here starts from an input written that way: on one thread the layer then reads
    // half of it from the other core's cache (ResNet-18's 1x1/2 projections measured faster on
    // one thread from an input in its own cache, and ran slower in the network: at 2 threads the
    // whole image 0.95x the time with them split).
    if (!split_known) {
      const size_t row = size_t(in.w) * size_t(in.cs);
      std::vector<uint8_t> source(size_t(in.h) * row);
      for (int y = 0; y < in.h; ++y) std::copy_n(in.pixel(y, 0), row, source.data() + size_t(y) * row);
      const auto rewrite = [&] {
#pragma omp parallel for num_threads(split.threads) schedule(static)
        for (int y = 0; y < in.h; ++y) std::copy_n(source.data() + size_t(y) * row, row, in.pixel(y, 0));
      };
      l.variant->one_thread = *fastest({run(o, *l.variant), run(split, split_variant(*l.variant, split.isa))}, 0.02, 25,
                                       1e30, rewrite) == 0;
    }
    mine[key] = to_json(*l.variant, split.threads);
    now.insert(key);
    ++measured;
  }
  if (ws) release(std::move(ws));
  const bool unsaved = measured > 0 && !path.empty() && !write_cache(path, cache);
  if (measured + cached == 0) tuning = "nothing to choose";
  else
    tuning = std::to_string(measured) + " measured, " + std::to_string(cached) + " from the cache" +
             (path.empty() ? std::string() : " (" + path + (unsaved ? ": cannot be written" : "") + ")");
  if (split.threads > 1 && measured + cached > 0) {
    choose_image_threads(split.threads);
    if (image_on_one_thread)
      tuning += "; an image runs on one thread (measured faster than on " + std::to_string(split.threads) + ")";
  }
}

// Whole images on one thread against `threads` (each layer split as tuned): alternating rounds
// of both (the first a warm-up), the fastest run of each counts, about 50 ms, 3 to 20 rounds.
// Not cached: it depends on the whole network, and costs a few runs at each load (none where
// the first round takes over 0.1 s: the images stay split).
void Model::Impl::choose_image_threads(int threads) {
  std::vector<float> image(size_t(info.channels) * size_t(info.height) * size_t(info.width));
  std::mt19937 random(11);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (float& v : image) v = normal(random);
  std::vector<float> logits(size_t(info.num_classes));
  EngineOptions one, many;
  one.tuned = many.tuned = true;
  many.threads = threads;
  auto run = [&](const EngineOptions& o) {
    return [&, p = &o] { run_image(image.data(), logits.data(), nullptr, *p); };
  };
  // Large networks (a round over 0.1 s): their layers gain from threads, and loads stay short.
  const std::optional<size_t> best = fastest({run(one), run(many)}, 0.05, 20, 0.1);
  image_on_one_thread = best && *best == 0;
}

}  // namespace apot::runtime
