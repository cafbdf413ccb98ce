// The public API (apot/runtime/model.h) and the Inspector (apot/runtime/inspect.h): thin
// wrappers over Model::Impl.
#include "apot/runtime/model.h"

#include <algorithm>

#include "apot/kernels/gemm.h"
#include "apot/runtime/inspect.h"
#include "engine.h"

#ifndef APOT_VERSION
#error "APOT_VERSION must be defined by the build"
#endif

namespace apot::runtime {

const char* version() { return APOT_VERSION; }

// ---- instruction sets ----

kernels::GemmIsa gemm_isa(Isa isa) {
  switch (isa) {
    case Isa::automatic: return kernels::default_gemm_isa();
    case Isa::scalar: return kernels::GemmIsa::scalar;
    case Isa::avx2: return kernels::GemmIsa::avx2;
    case Isa::avx_vnni: return kernels::GemmIsa::avx_vnni;
    case Isa::avx512_vnni: return kernels::GemmIsa::avx512_vnni;
  }
  throw std::invalid_argument("unknown instruction set");
}

Isa isa_of(kernels::GemmIsa isa) {
  switch (isa) {
    case kernels::GemmIsa::scalar: return Isa::scalar;
    case kernels::GemmIsa::avx2: return Isa::avx2;
    case kernels::GemmIsa::avx_vnni: return Isa::avx_vnni;
    case kernels::GemmIsa::avx512_vnni: return Isa::avx512_vnni;
  }
  throw std::invalid_argument("unknown instruction set");
}

const char* to_string(Isa isa) { return isa == Isa::automatic ? "auto" : kernels::to_string(gemm_isa(isa)); }

Isa parse_isa(const std::string& name) {
  for (Isa isa : {Isa::automatic, Isa::scalar, Isa::avx2, Isa::avx_vnni, Isa::avx512_vnni})
    if (name == to_string(isa)) return isa;
  throw std::invalid_argument("unknown instruction set '" + name + "' (auto, scalar, avx2, avx-vnni, avx512-vnni)");
}

std::vector<Isa> supported_isas() {
  std::vector<Isa> out;
  for (kernels::GemmIsa isa : kernels::supported_gemm_isas()) out.push_back(isa_of(isa));
  return out;
}

EngineOptions engine_options(const RunOptions& options) {
  EngineOptions o;
  if (options.threads < 1) throw std::invalid_argument("threads must be at least 1");
  o.threads = options.threads;
  o.isa = gemm_isa(options.isa);
  const auto& supported = kernels::supported_gemm_isas();
  if (std::find(supported.begin(), supported.end(), o.isa) == supported.end())
    throw std::invalid_argument(std::string("this CPU cannot run the ") + kernels::to_string(o.isa) + " kernels");
  o.pixel_stem = options.pixel_stem;
  o.tuned = options.isa == Isa::automatic;
  return o;
}

// ---- Model ----

Model::Model(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Model::Model(Model&&) noexcept = default;
Model& Model::operator=(Model&&) noexcept = default;
Model::~Model() = default;

const ModelInfo& Model::info() const { return impl_->info; }

void Model::run(const float* input, int batch, float* logits, const RunOptions& options) const {
  impl_->run_batch(input, batch, logits, engine_options(options));
}

std::vector<float> Model::run(const float* input, int batch, const RunOptions& options) const {
  std::vector<float> logits(size_t(std::max(batch, 0)) * size_t(impl_->info.num_classes));
  run(input, batch, logits.data(), options);
  return logits;
}

void Model::run_pixels(const uint8_t* pixels, int batch, PixelLayout layout, float* logits,
                       const RunOptions& options) const {
  impl_->run_pixel_batch(pixels, batch, layout, logits, engine_options(options));
}

std::vector<float> Model::run_pixels(const uint8_t* pixels, int batch, PixelLayout layout,
                                     const RunOptions& options) const {
  std::vector<float> logits(size_t(std::max(batch, 0)) * size_t(impl_->info.num_classes));
  run_pixels(pixels, batch, layout, logits.data(), options);
  return logits;
}

// ---- Inspector ----

const graph::Graph& Inspector::graph() const { return model_.impl_->graph; }
size_t Inspector::layer_count() const { return model_.impl_->layers.size(); }
int Inspector::layer_node(size_t index) const { return model_.impl_->layers.at(index).node; }

bool Inspector::uses_winograd(size_t index, kernels::GemmIsa isa) const {
  const engine::Layer& l = model_.impl_->layers.at(index);
  return l.winograd_applies(isa);
}

ConvVariant Inspector::conv_variant(size_t index, const EngineOptions& options) const {
  const engine::Layer& l = model_.impl_->layers.at(index);
  if (!l.quantized()) throw std::invalid_argument("layer " + std::to_string(index) + " is not a quantised convolution");
  ConvVariant v = model_.impl_->variant_for(l, options);
  v.schedule.winograd = v.schedule.winograd && l.winograd_applies(v.isa);
  v.schedule.amx = v.schedule.amx && l.amx_applies(v.isa);
  v.schedule.winograd = v.schedule.winograd && !v.schedule.amx;
  v.schedule.rows_first =
      v.schedule.rows_first && !v.schedule.winograd && !v.schedule.amx && l.rows_first_applies(v.isa);
  return v;
}

std::string Inspector::conv_variant_name(size_t index, const EngineOptions& options) const {
  const ConvVariant v = conv_variant(index, options);
  return std::string(kernels::to_string(v.isa)) + (v.schedule.amx ? " amx" : "") +
         (v.schedule.winograd ? " winograd" : "") + (v.schedule.rows_first ? " rows first" : "") +
         (v.one_thread && options.threads > 1 ? ", one thread" : "");
}

std::string Inspector::pixel_layer_kernel(size_t index, const EngineOptions& options) const {
  const Model::Impl& m = *model_.impl_;
  if (int(index) != m.pixel_layer || !m.on_pixels(options)) return "";
  const bool amx = kernels::stem_amx_applies(*m.layers[index].packed_pixels, options.isa);
  return std::string(kernels::to_string(options.isa)) + (amx ? " amx" : "") + ", on pixels";
}

std::string Inspector::tuning() const { return model_.impl_->tuning; }

std::vector<float> Inspector::run(const float* input, int batch, const EngineOptions& options) const {
  const Model::Impl& m = *model_.impl_;
  std::vector<float> logits(size_t(std::max(batch, 0)) * size_t(m.info.num_classes));
  m.run_batch(input, batch, logits.data(), options);
  return logits;
}

std::vector<float> Inspector::run_with_taps(const float* input, int batch, std::vector<std::vector<float>>& taps,
                                            const EngineOptions& options) const {
  const Model::Impl& m = *model_.impl_;
  std::vector<float> logits(size_t(std::max(batch, 0)) * size_t(m.info.num_classes));
  m.check_run(input, batch, logits.data(), options);
  const size_t image = m.info.input_size(), classes = size_t(m.info.num_classes);
  check_input(input, batch, image);
  taps.clear();
  for (int b = 0; b < batch; ++b)
    m.run_image(input + size_t(b) * image, logits.data() + size_t(b) * classes, &taps, options);
  return logits;
}

std::vector<int> Inspector::tap_nodes() const { return model_.impl_->taps; }

std::vector<std::string> Inspector::tap_names() const {
  std::vector<std::string> names;
  for (int node : model_.impl_->taps) names.push_back(graph()[size_t(node)].name);
  return names;
}

}  // namespace apot::runtime
