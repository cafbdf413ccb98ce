// The integer engine against the LibTorch fake-quantised model it was exported from, on random
// networks of several architectures and bit-widths, on every GEMM path.
#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>

#include "apot/export/export.h"
#include "apot/kernels/cpu.h"
#include "apot/runtime/inspect.h"
#include "apot/runtime/model.h"

using apot::qat::QuantPolicy;

namespace {

// Random but well-scaled batch-norm statistics and activation alphas, so that every layer
// carries signal through several quantisation levels.
void randomise(apot::qat::Network& model, unsigned seed) {
  torch::manual_seed(seed);
  torch::NoGradGuard no_grad;
  for (auto& m : model->modules(false)) {
    if (auto* bn = dynamic_cast<torch::nn::BatchNorm2dImpl*>(m.get())) {
      bn->weight.uniform_(0.5, 1.5);
      bn->bias.uniform_(-0.2, 0.4);
      bn->running_mean.uniform_(-0.5, 0.5);
      bn->running_var.uniform_(0.5, 2.0);
    }
    if (auto* c = dynamic_cast<apot::qat::QuantConv2dImpl*>(m.get())) c->act_alpha.uniform_(2.0, 4.0);
    if (auto* l = dynamic_cast<apot::qat::QuantLinearImpl*>(m.get()); l && l->quant_options().quantizes_input())
      l->act_alpha.uniform_(2.0, 4.0);  // (drawn only where used: the other tests keep their inputs)
  }
}

apot::qat::Network make(const std::string& arch, const std::string& shortcut = "A", double width_mult = 1.0) {
  apot::graph::ArchOptions o;
  o.shortcut = shortcut;
  o.width_mult = width_mult;
  return apot::qat::make_network(arch, o);
}

struct Case {  // shortcut: ResNets only
  std::string arch;
  std::string shortcut;
  int bits;
  apot::levels::Kind kind;
  int size;
  double width_mult = 1.0;
};

// A quantised network of the case, with fixed random weights: LibTorch seeds its generator
// differently in every process, and a random network per run would now and then put an
// activation on a level boundary.
apot::qat::Network make_quantised(const Case& c, unsigned seed) {
  torch::manual_seed(99 + seed);
  auto model = make(c.arch, c.shortcut, c.width_mult);
  QuantPolicy policy;
  policy.weight_bits = policy.act_bits = c.bits;
  policy.kind = c.kind;
  apot::qat::apply_policy(*model, policy);
  randomise(model, seed);
  model->eval();
  return model;
}

apot::runtime::Model export_and_load(apot::qat::NetworkImpl& model, const Case& c) {
  apot::exporter::ExportInfo info;
  info.height = info.width = c.size;
  info.mean = {0, 0, 0};
  info.std = {1, 1, 1};
  for (int k = 0; k < 10; ++k) info.class_names.push_back("c" + std::to_string(k));
  return apot::runtime::Model::from_bytes(apot::exporter::export_model(model, info), c.arch);
}

}  // namespace

TEST(Engine, AgreesWithTheTrainedModel) {
  torch::set_num_threads(1);  // one summation order for the reference's convolutions
  const std::vector<Case> cases{
      {"resnet20", "A", 4, apot::levels::Kind::apot, 32}, {"resnet20", "B", 3, apot::levels::Kind::apot, 20},
      {"resnet20", "A", 2, apot::levels::Kind::apot, 16}, {"resnet20", "A", 4, apot::levels::Kind::uniform, 16},
      {"resnet18", "B", 4, apot::levels::Kind::apot, 64},
  };
  unsigned seed = 0;
  for (const Case& c : cases) {
    auto model = make_quantised(c, ++seed);
    const auto engine = export_and_load(*model, c);
    const int batch = 6;
    const torch::Tensor x = torch::randn({batch, 3, c.size, c.size});
    torch::Tensor reference;
    {
      torch::NoGradGuard no_grad;
      reference = model(x).contiguous();
    }
    const float scale = reference.abs().max().item<float>();
    for (auto isa : apot::kernels::supported_gemm_isas()) {
      apot::runtime::RunOptions o;
      o.isa = apot::runtime::isa_of(isa);
      o.threads = 2;
      const std::vector<float> logits = engine.run(x.data_ptr<float>(), batch, o);
      const torch::Tensor got = torch::tensor(logits).reshape({batch, 10});
      // Integer sums are exact where LibTorch rounds in float (and its oneDNN convolutions do
      // not even round the same way from run to run), so now and then an activation right at a
      // level boundary lands one level apart; in an untrained network such a flip can move a
      // few logits. Hence: nearly all logits close, nearly all predictions equal.
      const double close = ((got - reference).abs() < 0.02f * scale).to(torch::kFloat).mean().item<double>();
      const int64_t same = got.argmax(1).eq(reference.argmax(1)).sum().item<int64_t>();
      EXPECT_GE(close, 0.9) << c.arch << " W" << c.bits << " on " << apot::kernels::to_string(isa);
      EXPECT_GE(same, batch - 1) << c.arch << " W" << c.bits << " on " << apot::kernels::to_string(isa);
    }
  }
}

// The first layer on 8-bit pixels (the VNNI paths, the ImageNet max-pool fused in bands)
// against the float first layer and the trained model, with a real normalisation.
TEST(Engine, FirstLayerOnPixelsMatchesTheFloatFirstLayer) {
  std::vector<apot::kernels::GemmIsa> vnni;
  for (auto isa : apot::kernels::supported_gemm_isas())
    if (isa == apot::kernels::GemmIsa::avx512_vnni || isa == apot::kernels::GemmIsa::avx_vnni) vnni.push_back(isa);
  if (vnni.empty()) GTEST_SKIP() << "the first layer runs on pixels on the VNNI paths only";
  torch::set_num_threads(1);
  const std::vector<float> mean{0.485f, 0.456f, 0.406f}, std{0.229f, 0.224f, 0.225f};
  // MobileNetV2: a stride-2 first layer with a ReLU6 whose only reader is quantised, so that
  // without taps only codes come out of it, made in bands.
  for (const Case& c :
       {Case{"resnet20", "A", 4, apot::levels::Kind::apot, 32}, Case{"resnet18", "B", 4, apot::levels::Kind::apot, 72},
        Case{"mobilenet_v2", "A", 4, apot::levels::Kind::apot, 72, 0.5}}) {
    torch::manual_seed(7);
    auto model = make(c.arch, c.shortcut, c.width_mult);
    QuantPolicy policy;
    policy.weight_bits = policy.act_bits = c.bits;
    apot::qat::apply_policy(*model, policy);
    randomise(model, 3);
    if (c.arch == "mobilenet_v2") {  // clipping above 6 and a first layer that passes 6: its clamp changes codes
      torch::NoGradGuard no_grad;
      bool first = true;
      for (auto& m : model->modules(false)) {
        if (auto* q = dynamic_cast<apot::qat::QuantConv2dImpl*>(m.get())) q->act_alpha.uniform_(7.0, 9.0);
        if (auto* bn = dynamic_cast<torch::nn::BatchNorm2dImpl*>(m.get()); bn && first) bn->weight.uniform_(4.0, 6.0);
        if (dynamic_cast<torch::nn::BatchNorm2dImpl*>(m.get())) first = false;
      }
    }
    model->eval();
    apot::exporter::ExportInfo info;
    info.height = info.width = c.size;
    info.mean = mean;
    info.std = std;
    for (int k = 0; k < 10; ++k) info.class_names.push_back("c" + std::to_string(k));
    const auto engine = apot::runtime::Model::from_bytes(apot::exporter::export_model(*model, info), c.arch);
    const int batch = 4;
    const torch::Tensor m = torch::tensor(mean).reshape({1, 3, 1, 1}), s = torch::tensor(std).reshape({1, 3, 1, 1});
    const torch::Tensor px = torch::randint(0, 256, {batch, 3, c.size, c.size}).to(torch::kFloat);
    const torch::Tensor x = ((px / 255.0f - m) / s).contiguous();
    const torch::Tensor chw = px.to(torch::kUInt8).contiguous(), hwc = chw.permute({0, 2, 3, 1}).contiguous();
    torch::Tensor reference;
    {
      torch::NoGradGuard no_grad;
      reference = model(x).contiguous();
    }
    for (auto isa : vnni) {
      const std::string what = c.arch + " on " + apot::kernels::to_string(isa);
      apot::runtime::EngineOptions on, off;
      on.isa = off.isa = isa;
      off.pixel_stem = false;
      std::vector<std::vector<float>> taps_on, taps_off;
      const apot::runtime::Inspector inspect(engine);
      const std::vector<float> logits_on = inspect.run_with_taps(x.data_ptr<float>(), batch, taps_on, on);
      const std::vector<float> logits_off = inspect.run_with_taps(x.data_ptr<float>(), batch, taps_off, off);
      // The stem (after the max-pool for ResNet-18): the same up to float rounding, and not the
      // same bits (the pixel path ran).
      ASSERT_EQ(taps_on[0].size(), taps_off[0].size());
      float largest = 0, diff = 0;
      for (size_t i = 0; i < taps_on[0].size(); ++i) {
        largest = std::max(largest, std::fabs(taps_off[0][i]));
        diff = std::max(diff, std::fabs(taps_on[0][i] - taps_off[0][i]));
      }
      EXPECT_LE(diff, 1e-5f * largest) << what;
      EXPECT_NE(taps_on[0], taps_off[0]) << what;
      const torch::Tensor got = torch::tensor(logits_on).reshape({batch, 10});
      const float scale = reference.abs().max().item<float>();
      EXPECT_GE(((got - reference).abs() < 0.02f * scale).to(torch::kFloat).mean().item<double>(), 0.9) << what;
      EXPECT_GE(got.argmax(1).eq(reference.argmax(1)).sum().item<int64_t>(), batch - 1) << what;
      // Input off the 8-bit grid takes the float first layer: the same bits either way.
      const torch::Tensor y = torch::randn({1, 3, c.size, c.size});
      EXPECT_EQ(inspect.run(y.data_ptr<float>(), 1, on), inspect.run(y.data_ptr<float>(), 1, off)) << what;
      // One image on two threads: each takes its own pooled rows in bands (ResNet-18 at 72: 18
      // pooled rows, 9 each, a band of 8 and one of 1), the same bits as on one thread. Without
      // taps, MobileNetV2's first layer makes its reader's codes band by band (36 rows: bands of
      // 8, 8 and 2 per thread; 8 x 4 and 4 on one), with taps from its whole value: the same bits.
      apot::runtime::EngineOptions two = on;
      two.threads = 2;
      for (int b = 0; b < batch; ++b) {
        const float* image = x.data_ptr<float>() + size_t(b) * 3 * size_t(c.size) * size_t(c.size);
        std::vector<std::vector<float>> taps_one, taps_two;
        const std::vector<float> logits_one = inspect.run_with_taps(image, 1, taps_one, on);
        EXPECT_EQ(inspect.run_with_taps(image, 1, taps_two, two), logits_one) << what << ", two threads";
        EXPECT_EQ(taps_two[0], taps_one[0]) << what << ", two threads";
        EXPECT_EQ(inspect.run(image, 1, on), logits_one) << what << ", without taps";
        EXPECT_EQ(inspect.run(image, 1, two), logits_one) << what << ", without taps, two threads";
      }
      // 8-bit images go into the first layer's pixels without a float image in between
      // (pixels_direct), in either layout: the same bits as the float image of the same pixels.
      apot::runtime::RunOptions ro;
      ro.isa = apot::runtime::isa_of(isa);
      for (int threads : {1, 2}) {
        ro.threads = threads;
        const std::vector<float> want = engine.run(x.data_ptr<float>(), batch, ro);
        EXPECT_EQ(engine.run_pixels(chw.data_ptr<uint8_t>(), batch, apot::runtime::PixelLayout::chw, ro), want)
            << what << ", 8-bit planar images, " << threads << " threads";
        EXPECT_EQ(engine.run_pixels(hwc.data_ptr<uint8_t>(), batch, apot::runtime::PixelLayout::hwc, ro), want)
            << what << ", 8-bit interleaved images, " << threads << " threads";
      }
    }
  }
}

TEST(Engine, ExportRejectsUnquantisedModelsAndLoadRejectsMismatches) {
  auto fp = make("resnet20");
  apot::exporter::ExportInfo info;
  info.mean = {0, 0, 0};
  info.std = {1, 1, 1};
  info.class_names = std::vector<std::string>(10, "c");
  EXPECT_THROW(apot::exporter::export_model(*fp, info), std::invalid_argument);
  auto q = make("resnet20");
  apot::qat::apply_policy(*q, QuantPolicy{});
  auto bytes = apot::exporter::export_model(*q, info);
  EXPECT_NO_THROW(apot::runtime::Model::from_bytes(bytes));
  bytes[200] ^= 1;  // inside the metadata section
  EXPECT_THROW(apot::runtime::Model::from_bytes(bytes), apot::runtime::FormatError);
  EXPECT_THROW(apot::runtime::Model::load("/nonexistent.apot"), apot::runtime::FormatError);
}
// A deep untrained network amplifies every float rounding that moves an activation across a
// level boundary, so ResNet-50 is checked block by block on stage 1 (bottleneck blocks with a
// projection shortcut).
TEST(Engine, BottleneckBlocksMatchTheTrainedModel) {
  torch::set_num_threads(1);  // one summation order, as above
  torch::manual_seed(50);     // fixed weights, as above
  auto model = make("resnet50", "B");
  QuantPolicy policy;
  policy.weight_bits = policy.act_bits = 5;
  apot::qat::apply_policy(*model, policy);
  randomise(model, 9);
  model->eval();
  apot::exporter::ExportInfo info;
  info.height = info.width = 32;
  info.mean = {0, 0, 0};
  info.std = {1, 1, 1};
  info.class_names = std::vector<std::string>(10, "c");
  const auto engine = apot::runtime::Model::from_bytes(apot::exporter::export_model(*model, info));
  const torch::Tensor x = torch::randn({1, 3, 32, 32});
  std::vector<std::vector<float>> taps;
  const apot::runtime::Inspector inspect(engine);
  inspect.run_with_taps(x.data_ptr<float>(), 1, taps);
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> outputs;
  model->forward_all(x, outputs);
  // Element by element: float rounding (which differs between runs of LibTorch's oneDNN
  // convolutions) occasionally moves an activation at a level boundary by one level, and that
  // changes the elements it feeds; a wrong graph or wrong numbers would change nearly all.
  auto expect_close = [&](size_t tap, const torch::Tensor& t) {
    const torch::Tensor nhwc = t.permute({0, 2, 3, 1}).contiguous();
    const torch::Tensor e = torch::tensor(taps.at(tap)).reshape(nhwc.sizes());
    const float tolerance = 1e-3f * (1 + nhwc.abs().max().item<float>());
    const double far = ((e - nhwc).abs() > tolerance).to(torch::kFloat).mean().item<double>();
    EXPECT_LT(far, 0.02) << "tap " << tap;
  };
  // Taps: the stem's max-pool (fused into it), then per bottleneck block its two inner
  // convolutions and its sum (fused into conv3, the projection before them).
  const std::vector<std::string> names = inspect.tap_names();
  const std::vector<int> nodes = inspect.tap_nodes();
  ASSERT_EQ(names.size(), taps.size());
  EXPECT_EQ(names[0], "maxpool");
  EXPECT_EQ(names[1], "layer1.0.downsample.0");
  EXPECT_EQ(names[2], "layer1.0.conv1");
  EXPECT_EQ(names[3], "layer1.0.conv2");
  EXPECT_EQ(names[4], "layer1.0");
  EXPECT_EQ(names.back(), "layer4.2");
  // Stage 1: three blocks; every tap there against the trained model's value of that node.
  size_t checked = 0;
  for (size_t t = 0; t < names.size() && (names[t].rfind("layer1.", 0) == 0 || t == 0); ++t, ++checked)
    expect_close(t, outputs[size_t(nodes[t])]);
  EXPECT_EQ(checked, 1u + 3 * 3 + 1);  // the stem, 3 blocks of conv1 / conv2 / sum, one projection
}

// The same logits for any thread count (batch 1 splits each convolution over the threads,
// larger batches split the images), and the per-layer timing hook fills one entry per layer.
TEST(Engine, ThreadsAndLayerTimesDoNotChangeResults) {
  auto model = make("resnet20");
  apot::qat::apply_policy(*model, QuantPolicy{});
  randomise(model, 21);
  model->eval();
  apot::exporter::ExportInfo info;
  info.mean = {0, 0, 0};
  info.std = {1, 1, 1};
  info.class_names = std::vector<std::string>(10, "c");
  const auto engine = apot::runtime::Model::from_bytes(apot::exporter::export_model(*model, info));
  const torch::Tensor x = torch::randn({3, 3, 32, 32});
  const std::vector<float> one = engine.run(x.data_ptr<float>(), 3);
  for (int threads : {2, 3}) {
    apot::runtime::RunOptions o;
    o.threads = threads;
    EXPECT_EQ(engine.run(x.data_ptr<float>(), 3, o), one) << threads << " threads";
    const std::vector<float> first = engine.run(x.data_ptr<float>(), 1, o);
    EXPECT_EQ(first, std::vector<float>(one.begin(), one.begin() + 10)) << threads << " threads, batch 1";
  }
  // The 3x3 stride-1 quantised layers (4-bit APoT: codes <= 48, |W| <= 10) with more than 16
  // output channels take Winograd on the AVX-512 VNNI path only (layer1's 16-channel layers take
  // the direct kernel's row tiles); the first, strided and last layers never.
  const apot::runtime::Inspector inspect(engine);
  const apot::graph::Graph& g = inspect.graph();
  const auto isas = apot::kernels::supported_gemm_isas();
  const bool avx512 = std::find(isas.begin(), isas.end(), apot::kernels::GemmIsa::avx512_vnni) != isas.end();
  for (size_t i = 0; i < inspect.layer_count(); ++i) {
    const apot::graph::Node& n = g[size_t(inspect.layer_node(i))];
    const bool eligible = avx512 && n.quant.quantized() && n.kernel == 3 && n.stride == 1 && n.out_channels > 16;
    EXPECT_EQ(inspect.uses_winograd(i, apot::kernels::GemmIsa::avx512_vnni), eligible) << n.name;
    EXPECT_FALSE(inspect.uses_winograd(i, apot::kernels::GemmIsa::avx2)) << n.name;
  }
  std::vector<double> seconds(inspect.layer_count(), 0.0);
  apot::runtime::EngineOptions timed;
  timed.layer_seconds = &seconds;
  EXPECT_EQ(inspect.run(x.data_ptr<float>(), 3, timed), one);
  for (size_t i = 0; i + 1 < seconds.size(); ++i) EXPECT_GT(seconds[i], 0.0) << "layer " << i;
  EXPECT_EQ(seconds.back(), 0.0);  // the classifier is not timed
  std::vector<double> wrong(2);
  timed.layer_seconds = &wrong;
  EXPECT_THROW(inspect.run(x.data_ptr<float>(), 1, timed), std::invalid_argument);
  torch::Tensor bad = x.clone();
  bad[2][1][5][7] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_THROW(engine.run(bad.data_ptr<float>(), 3), std::invalid_argument);
  EXPECT_NO_THROW(engine.run(bad.data_ptr<float>(), 2));  // the NaN is in the third image
  bad[0][0][0][0] = std::numeric_limits<float>::infinity();
  std::vector<std::vector<float>> taps;
  EXPECT_THROW(inspect.run_with_taps(bad.data_ptr<float>(), 1, taps), std::invalid_argument);
  bad = x.clone();
  bad[1][2][3][4] = -std::numeric_limits<float>::infinity();
  EXPECT_THROW(engine.run(bad.data_ptr<float>(), 2), std::invalid_argument);
  bad[1][2][3][4] = -std::numeric_limits<float>::max();  // the largest finite values are input
  bad[1][0][0][1] = std::numeric_limits<float>::max();
  EXPECT_NO_THROW(engine.run(bad.data_ptr<float>(), 2));
}

// The new layer types (depthwise convolutions, signed inputs of the linear bottlenecks, ReLU6
// epilogues, channel split / concat / shuffle, quantised linear layers) layer by layer: every
// tapped value of the engine equals the trained model's to float rounding on an image unless an
// activation sits on a level boundary, where the exact integer sums and LibTorch's float sums
// may round to neighbouring levels (in untrained networks, rarely). So: at least 3 of 4 images
// agree at every layer, and those give the same prediction.
TEST(Engine, NewLayerTypesMatchTheTrainedModelLayerByLayer) {
  torch::set_num_threads(1);
  const std::vector<Case> cases{
      {"mobilenet_v2_cifar", "A", 4, apot::levels::Kind::apot, 32, 0.5},
      {"mobilenet_v2_cifar", "A", 3, apot::levels::Kind::uniform, 16, 0.5},
      {"shufflenet_v2_x0_5_cifar", "A", 4, apot::levels::Kind::apot, 32},
      {"shufflenet_v2_x0_5_cifar", "A", 2, apot::levels::Kind::pot, 16},
      {"vgg11_bn_cifar", "A", 4, apot::levels::Kind::apot, 32},
  };
  unsigned seed = 20;
  for (const Case& c : cases) {
    auto model = make_quantised(c, ++seed);
    const auto engine = export_and_load(*model, c);
    apot::runtime::Inspector inspect(engine);
    const std::vector<std::string> names = inspect.tap_names();
    const torch::Tensor x = torch::randn({4, 3, c.size, c.size});
    for (auto isa : apot::kernels::supported_gemm_isas()) {
      apot::runtime::EngineOptions o;
      o.isa = isa;
      int exact = 0;
      for (int b = 0; b < 4; ++b) {
        const torch::Tensor image = x.slice(0, b, b + 1).contiguous();
        std::vector<std::vector<float>> taps;
        const std::vector<float> logits = inspect.run_with_taps(image.data_ptr<float>(), 1, taps, o);
        std::vector<torch::Tensor> outputs;
        {
          torch::NoGradGuard no_grad;
          model->forward_all(image, outputs);
        }
        ASSERT_EQ(taps.size(), names.size());
        bool same = true;
        for (size_t t = 0; t < names.size(); ++t) {
          const int node = model->graph().find(names[t]);
          ASSERT_GE(node, 0) << names[t];
          torch::Tensor want = outputs[size_t(node)];
          if (want.dim() == 4) want = want.permute({0, 2, 3, 1});
          want = want.contiguous().reshape(-1);
          const torch::Tensor got = torch::tensor(taps[t]);
          ASSERT_EQ(got.numel(), want.numel()) << names[t];
          const float tolerance = 1e-5f * std::max(1.0f, want.abs().max().item<float>());
          same = same && (got - want).abs().max().item<float>() <= tolerance;
        }
        if (!same) continue;
        ++exact;
        const int64_t predicted = torch::tensor(logits).argmax().item<int64_t>();
        EXPECT_EQ(predicted, outputs.back().argmax().item<int64_t>()) << c.arch << " image " << b;
      }
      EXPECT_GE(exact, 3) << c.arch << " W" << c.bits << " on " << apot::kernels::to_string(isa);
    }
  }
}

namespace {

// Sets an environment variable for the scope of one test, restoring the old value after it.
struct EnvGuard {
  std::string name, old;
  bool had;
  EnvGuard(const std::string& n, const std::string& value) : name(n), had(std::getenv(n.c_str()) != nullptr) {
    if (had) old = std::getenv(n.c_str());
    setenv(name.c_str(), value.c_str(), 1);
  }
  ~EnvGuard() { had ? (void)setenv(name.c_str(), old.c_str(), 1) : (void)unsetenv(name.c_str()); }
};

std::vector<float> logits_of(const apot::runtime::Model& engine, const torch::Tensor& x, int threads,
                             apot::runtime::Isa isa = apot::runtime::Isa::automatic) {
  apot::runtime::RunOptions o;
  o.threads = threads;
  o.isa = isa;
  return engine.run(x.data_ptr<float>(), int(x.size(0)), o);
}

nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path);
  return nlohmann::json::parse(in);
}

}  // namespace

// Inspector::tuning() without the whole-image thread choice, which depends on timing; that part
// must be absent or this exact note.
std::string tuning_counts(const apot::runtime::Inspector& inspect) {
  const std::string t = inspect.tuning();
  const size_t at = t.find("; ");
  if (at != std::string::npos) {
    EXPECT_EQ(t.substr(at), "; an image runs on one thread (measured faster than on 2)");
  }
  return t.substr(0, at);
}

// The kernel of each quantised convolution chosen by measurement when a model is loaded
// (APOT_TUNE), and whether it runs on one thread where two run an image: the choices are kept in
// the cache file and read back from it, and whatever they are, the engine gives the same logits,
// bit for bit, as every path with its default kernels, on one and two threads.
TEST(Tuning, MeasuredKernelsAreCachedAndGiveTheSameBits) {
  const std::string dir = ::testing::TempDir() + "/apot-tune-" + std::to_string(::getpid());
  std::filesystem::create_directories(dir);
  const std::string cache = dir + "/kernels.json";
  std::filesystem::remove(cache);
  EnvGuard cache_env("APOT_TUNE_CACHE", cache);
  const Case c{"resnet20", "A", 4, apot::levels::Kind::apot, 32};
  auto model = make_quantised(c, 70);
  torch::manual_seed(5);
  const torch::Tensor x = torch::randn({3, 3, 32, 32});
  const auto& isas = apot::kernels::supported_gemm_isas();
  struct TwoThreads {  // the split is measured at OpenMP's thread count, which LibTorch sets
    const int before = torch::get_num_threads();
    TwoThreads() { torch::set_num_threads(2); }
    ~TwoThreads() { torch::set_num_threads(before); }
  } two_threads;

  const torch::Tensor x1 = x.slice(0, 0, 1).contiguous();  // one image: its layers split over threads
  auto check_bits = [&](const apot::runtime::Model& engine, const std::string& when) {
    const std::vector<float> tuned = logits_of(engine, x, 1), tuned2 = logits_of(engine, x, 2);
    const std::vector<float> one = logits_of(engine, x1, 2);
    for (auto isa : isas) {
      EXPECT_EQ(tuned, logits_of(engine, x, 1, apot::runtime::isa_of(isa))) << when << " " << to_string(isa);
      EXPECT_EQ(tuned2, logits_of(engine, x, 2, apot::runtime::isa_of(isa))) << when << " " << to_string(isa);
      EXPECT_EQ(one, logits_of(engine, x1, 1, apot::runtime::isa_of(isa))) << when << " " << to_string(isa);
    }
  };
  apot::runtime::EngineOptions tuned_options, tuned_two, untuned_two;
  tuned_options.tuned = tuned_two.tuned = true;
  tuned_two.threads = untuned_two.threads = 2;
  {
    EnvGuard mode("APOT_TUNE", "force");
    const auto engine = export_and_load(*model, c);
    const apot::runtime::Inspector inspect(engine);
    // 18 quantised convolutions of 9 kinds: each kind measured once, its twins take the choice.
    // (Every path measured, and at two threads; with one path, only the split.)
    EXPECT_EQ(tuning_counts(inspect), "9 measured, 9 from the cache (" + cache + ")");
    check_bits(engine, "measured");
    ASSERT_TRUE(std::filesystem::exists(cache));
    const nlohmann::json j = read_json(cache);
    EXPECT_EQ(j.at("version"), 4);
    EXPECT_EQ(j.at(apot::kernels::cpu_model()).size(), 9u);
    for (const auto& [key, choice] : j.at(apot::kernels::cpu_model()).items()) {
      EXPECT_EQ(choice.at("split_threads"), 2) << key;
      EXPECT_TRUE(choice.at("one_thread").is_boolean()) << key;
    }
  }
  // Rewrites every entry of the cache file to one choice (split measured at two threads).
  auto choose_everywhere = [&](const std::string& isa, bool winograd, bool amx, bool one_thread) {
    const nlohmann::json choice{{"isa", isa}, {"winograd", winograd},     {"rows_first", false},
                                {"amx", amx}, {"one_thread", one_thread}, {"split_threads", 2}};
    nlohmann::json j = read_json(cache);
    for (auto& [key, entry] : j.at(apot::kernels::cpu_model()).items()) entry = choice;
    std::ofstream(cache) << j.dump();
  };
  if (apot::kernels::cpu_features().amx_int8) {
    // AMX tiles from the cache: taken on one thread and, split over two, kept (not the default).
    choose_everywhere("avx512-vnni", false, true, false);
    EnvGuard mode("APOT_TUNE", "1");
    const auto engine = export_and_load(*model, c);
    const apot::runtime::Inspector inspect(engine);
    for (size_t i = 0; i < inspect.layer_count(); ++i)
      if (inspect.graph()[size_t(inspect.layer_node(i))].quant.quantized()) {
        EXPECT_EQ(inspect.conv_variant_name(i, tuned_options), "avx512-vnni amx") << i;
        EXPECT_EQ(inspect.conv_variant_name(i, tuned_two), "avx512-vnni amx") << i;
      }
    check_bits(engine, "from the cache, AMX");
  }
  if (std::find(isas.begin(), isas.end(), apot::kernels::GemmIsa::avx2) == isas.end()) return;
  for (bool one_thread : {true, false}) {
    // The cache is read: every entry rewritten to AVX2 (which this model can run) is taken, on
    // one thread where two run an image, or split (then with the path's default kernels).
    choose_everywhere("avx2", true, false, one_thread);
    EnvGuard mode("APOT_TUNE", "1");
    const auto engine = export_and_load(*model, c);
    const apot::runtime::Inspector inspect(engine);
    EXPECT_EQ(tuning_counts(inspect), "0 measured, 18 from the cache (" + cache + ")");
    for (size_t i = 0; i < inspect.layer_count(); ++i) {
      if (inspect.graph()[size_t(inspect.layer_node(i))].quant.quantized()) {
        EXPECT_EQ(inspect.conv_variant_name(i, tuned_options), "avx2") << i;
        EXPECT_EQ(inspect.conv_variant(i, tuned_two).one_thread, one_thread) << i;
        EXPECT_EQ(inspect.conv_variant_name(i, tuned_two),
                  one_thread ? "avx2, one thread" : inspect.conv_variant_name(i, untuned_two))
            << i;
      }
    }
    check_bits(engine, one_thread ? "from the cache, one thread" : "from the cache, split");
  }
  {  // A split measured at another thread count is measured again (the kernels are kept).
    nlohmann::json j = read_json(cache);
    for (auto& [key, choice] : j.at(apot::kernels::cpu_model()).items()) choice["split_threads"] = 3;
    std::ofstream(cache) << j.dump();
    EnvGuard mode("APOT_TUNE", "1");
    const auto engine = export_and_load(*model, c);
    EXPECT_EQ(tuning_counts(apot::runtime::Inspector(engine)), "9 measured, 9 from the cache (" + cache + ")");
    for (const auto& [key, choice] : read_json(cache).at(apot::kernels::cpu_model()).items()) {
      EXPECT_EQ(choice.at("isa"), "avx2") << key;
      EXPECT_EQ(choice.at("split_threads"), 2) << key;
    }
  }
  {  // A corrupt cache is measured around and replaced.
    std::ofstream(cache) << "{not json";
    EnvGuard mode("APOT_TUNE", "1");
    const auto engine = export_and_load(*model, c);
    EXPECT_EQ(tuning_counts(apot::runtime::Inspector(engine)), "9 measured, 9 from the cache (" + cache + ")");
    EXPECT_EQ(read_json(cache).at(apot::kernels::cpu_model()).size(), 9u);
  }
  {  // Off: the path's default kernels.
    EnvGuard mode("APOT_TUNE", "0");
    const auto engine = export_and_load(*model, c);
    const apot::runtime::Inspector inspect(engine);
    EXPECT_EQ(inspect.tuning(), "off");
    for (size_t i = 0; i < inspect.layer_count(); ++i) {
      if (inspect.graph()[size_t(inspect.layer_node(i))].quant.quantized()) {
        EXPECT_EQ(inspect.conv_variant(i, tuned_options).isa, apot::kernels::default_gemm_isa()) << i;
      }
    }
    check_bits(engine, "off");
  }
  {
    EnvGuard mode("APOT_TUNE", "sometimes");
    try {
      export_and_load(*model, c);
      ADD_FAILURE() << "no error for APOT_TUNE=sometimes";
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find("APOT_TUNE=sometimes is not one of 0, 1, force"), std::string::npos)
          << e.what();
    }
  }
  std::filesystem::remove_all(dir);
}
