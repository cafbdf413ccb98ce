// Post-training quantisation: the alphas each method chooses (checked against direct
// computations), batch-norm re-estimation, determinism, and the whole flow to a checkpoint.
#include "apot/ptq/ptq.h"

#include <gtest/gtest.h>

#include <sstream>

#include "data_test_util.h"

namespace {
using apot::test::TempDir;

// A CIFAR ResNet-20 for 1-channel 8x8 images with random weights and batch-norm statistics.
apot::qat::Network random_model(const apot::qat::QuantPolicy& policy) {
  apot::graph::ArchOptions ao;
  ao.in_channels = 1;
  ao.num_classes = 4;
  torch::manual_seed(3);
  auto fp = apot::qat::make_network("resnet20", ao);
  {
    torch::NoGradGuard no_grad;
    for (auto& b : fp->named_buffers())
      if (b.key().find("running_mean") != std::string::npos) b.value().uniform_(-0.2, 0.2);
  }
  return apot::qat::quantized_copy(fp, policy);
}

apot::qat::QuantPolicy w4a4() {
  apot::qat::QuantPolicy p;
  p.weight_norm = apot::qat::WeightNorm::none;
  return p;
}

torch::Tensor images() {
  torch::manual_seed(5);
  return torch::randn({64, 1, 8, 8});
}

double squared_error(const torch::Tensor& values, double alpha, const apot::qat::QuantOptions& q) {
  const apot::qat::QuantizerSpec spec{q.kind, q.weight_bits, apot::levels::Role::weight, q.variant};
  return (values - apot::qat::rcf_quantize(values, torch::full({}, alpha), spec)).square().sum().item<double>();
}

TEST(Ptq, InputOfIsTheValueTheLayerReads) {
  auto model = random_model(w4a4());
  model->eval();
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> all;
  model->forward_all(images(), all);
  const auto& g = model->graph();
  const int node = g.find("layer2.0.conv1");
  EXPECT_TRUE(torch::equal(model->input_of(images(), "layer2.0.conv1"), all[size_t(g[size_t(node)].inputs[0])]));
  EXPECT_THROW(model->input_of(images(), "nope"), std::invalid_argument);
}

TEST(Ptq, MinmaxTakesTheLargestWeightAndInput) {
  auto model = random_model(w4a4());
  apot::ptq::Options o;
  o.method = apot::ptq::Method::minmax;
  o.batch = 16;
  const auto layers = apot::ptq::calibrate(*model, images(), o);
  ASSERT_EQ(layers.size(), model->graph().weight_layers().size());
  torch::NoGradGuard no_grad;
  for (const std::string name : {"layer1.0.conv1", "layer3.2.conv2"}) {
    const auto* conv = model->conv(name);
    EXPECT_FLOAT_EQ(conv->weight_alpha.item<float>(), conv->weight.abs().max().item<float>()) << name;
    EXPECT_FLOAT_EQ(conv->act_alpha.item<float>(), model->input_of(images(), name).max().item<float>()) << name;
  }
  EXPECT_EQ(layers[0].quant, "int8");
  EXPECT_EQ(layers[0].act_alpha, 0);  // the first layer's input is not quantised
}

TEST(Ptq, MseAlphasHaveNoMoreErrorThanMinmaxAndAreDeterministic) {
  apot::ptq::Options mse;
  mse.batch = 16;
  mse.batch_norm = false;
  mse.bias_correction = false;
  auto a = random_model(w4a4()), b = random_model(w4a4()), m = random_model(w4a4());
  const auto la = apot::ptq::calibrate(*a, images(), mse);
  const auto lb = apot::ptq::calibrate(*b, images(), mse);
  apot::ptq::Options minmax = mse;
  minmax.method = apot::ptq::Method::minmax;
  const auto lm = apot::ptq::calibrate(*m, images(), minmax);
  torch::NoGradGuard no_grad;
  int smaller = 0;
  for (size_t i = 1; i + 1 < la.size(); ++i) {
    EXPECT_EQ(la[i].weight_alpha, lb[i].weight_alpha) << la[i].name;
    EXPECT_EQ(la[i].act_alpha, lb[i].act_alpha) << la[i].name;
    const auto* conv = a->conv(la[i].name);
    const double largest = conv->weight.abs().max().item<double>();
    EXPECT_LE(la[i].weight_alpha, largest);
    EXPECT_LE(squared_error(conv->weight, la[i].weight_alpha, conv->quant_options()),
              squared_error(conv->weight, largest, conv->quant_options()));
    EXPECT_GE(la[i].weight_sqnr_db, lm[i].weight_sqnr_db - 1e-9) << la[i].name;
    smaller += la[i].weight_alpha < largest;
  }
  EXPECT_GT(smaller, 0);  // 4-bit levels over Gaussian weights: clipping pays somewhere
}

TEST(Ptq, BatchNormsAreReestimatedOnTheCalibrationImages) {
  auto model = random_model(w4a4());
  apot::ptq::Options o;
  o.batch = 16;
  apot::ptq::calibrate(*model, images(), o);
  torch::NoGradGuard no_grad;
  // conv1's output does not depend on any batch norm: bn1's running mean must be its mean.
  const torch::Tensor out = model->conv("conv1")->forward(images());
  const auto buffers = model->named_buffers();
  EXPECT_TRUE(torch::allclose(buffers["bn1.running_mean"], out.mean({0, 2, 3}), 1e-4, 1e-5));
  EXPECT_FALSE(model->is_training());
}

TEST(Ptq, ReconstructionBlocksEndAtEachAdd) {
  auto model = random_model(w4a4());
  const auto& g = model->graph();
  const auto blocks = apot::ptq::reconstruction_blocks(g);
  ASSERT_EQ(blocks.size(), 10u);  // nine residual blocks, then pooling and the classifier
  EXPECT_EQ(blocks[0].first, 1);
  EXPECT_EQ(g[size_t(blocks[0].second)].name, "layer1.0");
  for (size_t b = 1; b < blocks.size(); ++b) EXPECT_EQ(blocks[b].first, blocks[b - 1].second + 1);
  EXPECT_EQ(blocks.back().second, int(g.size()) - 1);
}

// Mean squared difference of the logits of two models on the images.
double logit_error(apot::qat::NetworkImpl& a, apot::qat::NetworkImpl& b, const torch::Tensor& x) {
  torch::NoGradGuard no_grad;
  a.eval();
  b.eval();
  return (a.forward(x) - b.forward(x)).square().mean().item<double>();
}

TEST(Ptq, ReconLearnsARoundingOnTheLevelsThatFitsBetterThanTheNearest) {
  apot::ptq::Options mse;
  mse.batch = 16;
  mse.batch_norm = mse.bias_correction = false;
  apot::ptq::Options recon = mse;
  recon.method = apot::ptq::Method::recon;
  recon.iters = 150;
  auto nearest = random_model(w4a4()), learned = random_model(w4a4());
  auto reference = std::dynamic_pointer_cast<apot::qat::NetworkImpl>(learned->clone());
  reference->set_policy(apot::qat::QuantPolicy::full_precision());
  apot::ptq::calibrate(*nearest, images(), mse);
  apot::ptq::calibrate(*learned, images(), recon);
  torch::NoGradGuard no_grad;
  int moved = 0;
  for (const std::string name : {"layer1.0.conv1", "layer2.1.conv2", "layer3.2.conv1"}) {
    const auto* before = nearest->conv(name);
    const auto* after = learned->conv(name);
    EXPECT_EQ(after->weight_alpha.item<float>(), before->weight_alpha.item<float>()) << name;
    // The weights are on the level set: quantising them changes nothing.
    EXPECT_TRUE(torch::allclose(after->quantized_weight(), after->weight, 0, 1e-6)) << name;
    EXPECT_FALSE(after->weight_override.defined());
    // Each is one of the two levels around the original weight, so at most one level step from
    // the nearest one.
    const torch::Tensor original = reference->conv(name)->weight;
    const double alpha = after->weight_alpha.item<double>();
    const auto levels = apot::levels::LevelSet::make(apot::levels::Kind::apot, 4, apot::levels::Role::weight).levels();
    double widest = 0;
    for (size_t k = 1; k < levels.size(); ++k) widest = std::max<double>(widest, levels[k] - levels[k - 1]);
    EXPECT_LE((after->weight / alpha - (original / alpha).clamp(-1, 1)).abs().max().item<double>(), widest + 1e-5)
        << name;
    moved += (after->weight != before->quantized_weight()).sum().item<int>();
  }
  EXPECT_GT(moved, 0);  // some weights were rounded away from the nearest level
  EXPECT_LT(logit_error(*learned, *reference, images()), logit_error(*nearest, *reference, images()));
}

TEST(Ptq, QDropLeavesInputsUnquantisedOnlyWhileABlockIsLearned) {
  // A layer with input_drop p keeps about p of its input elements as they are.
  auto model = random_model(w4a4());
  auto* conv = model->conv("layer1.0.conv1");
  const torch::Tensor x = torch::rand({4, 16, 8, 8}) * 2;
  const torch::Tensor q = apot::qat::quantize_layer_input(x, conv->act_alpha, conv->quant_options());
  const torch::Tensor half = apot::qat::quantize_layer_input(x, conv->act_alpha, conv->quant_options(), 0.5);
  const double kept = (half == x).logical_and(q != x).sum().item<double>() / (q != x).sum().item<double>();
  EXPECT_NEAR(kept, 0.5, 0.05);
  EXPECT_TRUE(((half == x).logical_or(half == q)).all().item<bool>());

  // Recon with QDrop: deterministic for a seed, different from recon without it, and every
  // layer quantises its whole input afterwards.
  apot::ptq::Options recon;
  recon.batch = 16;
  recon.method = apot::ptq::Method::recon;
  recon.iters = 40;
  apot::ptq::Options qdrop = recon;
  qdrop.drop = 0.5;
  auto a = random_model(w4a4()), b = random_model(w4a4()), plain = random_model(w4a4());
  apot::ptq::calibrate(*a, images(), qdrop);
  apot::ptq::calibrate(*b, images(), qdrop);
  apot::ptq::calibrate(*plain, images(), recon);
  bool differs = false;
  for (const auto& layer : a->graph().nodes()) {
    if (const auto* c = a->conv(layer.name)) {
      EXPECT_EQ(c->input_drop, 0.0) << layer.name;
      EXPECT_TRUE(torch::equal(c->weight, b->conv(layer.name)->weight)) << layer.name;
      differs |= !torch::equal(c->weight, plain->conv(layer.name)->weight);
    }
  }
  EXPECT_TRUE(differs);
  qdrop.drop = 1.0;
  EXPECT_THROW(apot::ptq::calibrate(*a, images(), qdrop), std::invalid_argument);
}

TEST(Ptq, QuantizeWritesACheckpointThatEvaluatesToWhatItReported) {
  TempDir data, out;
  apot::test::write_quadrants(data.str(), "train", 160, 1);
  apot::test::write_quadrants(data.str(), "t10k", 64, 2);
  apot::train::TrainConfig c;
  c.data = "mnist:" + data.str();
  c.kind = "fp";
  c.batch_size = 16;
  c.val_size = 32;
  c.epochs = 1;
  c.lr = 0.05;
  c.threads = 2;
  c.workers = 1;
  std::ostringstream log;
  apot::train::run_training(c, out / "fp", false, log);

  apot::train::TrainConfig q = c;
  q.kind = "apot";
  q.init = out / "fp/best.ckpt";
  apot::ptq::Options o;
  o.calib = 64;
  o.batch = 32;
  o.sensitivity = true;
  const std::string path = out / "q.ckpt";
  const auto r = apot::ptq::quantize(q, o, path, log);
  EXPECT_EQ(r.calibration_images, 64);
  // Sensitivity: every quantised layer (not the int8 first and last), each on its own, changes
  // top-1 from the same baseline: every layer in float, calibrated alike.
  ASSERT_EQ(r.sensitivity.size(), r.layers.size() - 2);
  EXPECT_EQ(r.sensitivity[0].name, "layer1.0.conv1");
  ASSERT_TRUE(std::isfinite(r.sensitivity_baseline_top1));
  for (const auto& s : r.sensitivity) {
    EXPECT_NEAR(s.top1 - s.top1_change, r.sensitivity_baseline_top1, 1e-9) << s.name;
    EXPECT_TRUE(std::isfinite(s.output_sqnr_db)) << s.name;
    EXPECT_EQ(s.quant, "W4A4 apot");
  }
  apot::train::Checkpoint meta;
  auto model = apot::train::load_checkpoint(path, &meta);
  EXPECT_EQ(meta.config.kind, "apot");
  EXPECT_EQ(meta.config.weight_norm, "none");
  EXPECT_EQ(meta.epoch, 0);
  apot::data::LoaderOptions lo;
  lo.batch_size = 64;
  lo.shuffle = false;
  const auto spec = apot::data::parse_data_spec(c.data);
  const auto test_set = apot::data::open_dataset(spec, apot::data::Split::test);
  lo.transform = apot::train::transform_for(meta.config, spec, apot::data::Split::test, *test_set);
  apot::data::Loader loader(test_set, lo);
  EXPECT_NEAR(apot::train::evaluate(model, loader).top1, r.test.top1, 1e-9);

  // From a checkpoint trained with weight normalisation (QAT): its normalised weights, which its
  // batch norms fit (minmax changes no weight).
  apot::train::TrainConfig qat = c;
  qat.kind = "apot";
  apot::train::run_training(qat, out / "qat", false, log);
  apot::train::TrainConfig from_qat = qat;
  from_qat.init = out / "qat/best.ckpt";
  apot::ptq::Options minmax = o;
  minmax.method = apot::ptq::Method::minmax;
  minmax.sensitivity = false;
  apot::ptq::quantize(from_qat, minmax, out / "from-qat.ckpt", log);
  {
    auto source = apot::train::load_checkpoint(out / "qat/best.ckpt");
    auto result = apot::train::load_checkpoint(out / "from-qat.ckpt");
    torch::NoGradGuard no_grad;
    const auto* before = source->conv("layer2.0.conv1");
    EXPECT_EQ(before->quant_options().weight_norm, apot::qat::WeightNorm::detached);
    EXPECT_TRUE(torch::allclose(result->conv("layer2.0.conv1")->weight, before->normalized_weight()));
    EXPECT_FALSE(torch::allclose(before->weight, before->normalized_weight()));
    EXPECT_TRUE(torch::equal(result->conv("conv1")->weight, source->conv("conv1")->weight));  // int8: as it was
  }

  // A calibration set smaller than a batch, or no quantiser: an error, nothing written.
  o.calib = 16;
  EXPECT_THROW(apot::ptq::quantize(q, o, out / "small.ckpt", log), std::invalid_argument);
  o.calib = 64;
  apot::train::TrainConfig fp = q;
  fp.kind = "fp";
  EXPECT_THROW(apot::ptq::quantize(fp, o, out / "fp.ckpt", log), std::invalid_argument);
  EXPECT_FALSE(std::filesystem::exists(out / "small.ckpt"));
  EXPECT_FALSE(std::filesystem::exists(out / "fp.ckpt"));
  EXPECT_THROW(apot::ptq::parse_method("recon2"), std::invalid_argument);
}

}  // namespace
