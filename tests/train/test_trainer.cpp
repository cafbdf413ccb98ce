// The trainer on a tiny synthetic data set: the loss falls, a resumed run ends where an
// uninterrupted one ends, NaN stops the run, and state dicts round-trip.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numeric>
#include <sstream>

#include "apot/graph/cost.h"
#include "apot/qat/checkpoint_import.h"
#include "apot/train/probe.h"
#include "apot/train/trainer.h"
#include "data_test_util.h"

using apot::test::TempDir;
using apot::train::TrainConfig;

namespace {

TrainConfig tiny_config(const TempDir& data) {
  TrainConfig c;
  c.data = "mnist:" + data.str();
  c.batch_size = 16;
  c.eval_batch_size = 64;
  c.val_size = 32;
  c.workers = 2;
  c.epochs = 3;
  c.lr = 0.05;
  c.act_alpha_init = 4.0;
  c.threads = 2;
  return c;
}

std::vector<nlohmann::json> metrics(const std::string& dir) {
  std::ifstream in(dir + "/metrics.jsonl");
  std::vector<nlohmann::json> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(nlohmann::json::parse(line));
  return lines;
}

class Trainer : public ::testing::Test {
 protected:
  void SetUp() override {
    apot::test::write_quadrants(data_.str(), "train", 160, 1);
    apot::test::write_quadrants(data_.str(), "t10k", 64, 2);
  }
  TempDir data_;
};

}  // namespace

TEST_F(Trainer, AFewEpochsLowerTheLoss) {
  TempDir out;
  std::ostringstream log;
  const auto summary = apot::train::run_training(tiny_config(data_), out.str(), false, log);
  const auto m = metrics(out.str());
  ASSERT_EQ(m.size(), 3u) << log.str();
  EXPECT_LT(m.back()["train_loss"].get<double>(), m.front()["train_loss"].get<double>()) << log.str();
  EXPECT_GE(summary.best_epoch, 1);
  EXPECT_TRUE(std::filesystem::exists(out / "best.ckpt"));
  EXPECT_TRUE(std::filesystem::exists(out / "summary.json"));
  EXPECT_FALSE(std::filesystem::exists(out / "last.ckpt.tmp"));
  // The checkpoint evaluates to what the trainer measured.
  apot::train::Checkpoint meta;
  auto model = apot::train::load_checkpoint(out / "last.ckpt", &meta);
  EXPECT_EQ(meta.epoch, 3);
  EXPECT_EQ(meta.config.kind, "apot");
  EXPECT_NEAR(meta.metrics["test_top1"], m.back()["test_top1"].get<double>(), 1e-9);
  // Every epoch logs every clipping threshold (per-channel ones as their mean); the last line's
  // are the checkpoint's, and training moves them.
  const nlohmann::json& alphas = m.back()["alphas"];
  size_t act = 0, weight = 0;
  for (const auto& p : model->named_parameters()) {
    const std::string& name = p.key();
    if (name.find("alpha") == std::string::npos) continue;
    ASSERT_TRUE(alphas.contains(name)) << name;
    EXPECT_NEAR(alphas[name].get<double>(), p.value().mean().item<double>(), 1e-6) << name;
    act += name.find("act_alpha") != std::string::npos;
    weight += name.find("weight_alpha") != std::string::npos;
  }
  EXPECT_GT(act, 0u);
  EXPECT_GT(weight, 0u);
  EXPECT_EQ(alphas.size(), act + weight);
  EXPECT_NE(m.front()["alphas"], alphas);
}

TEST_F(Trainer, ResumeEndsWhereAnUninterruptedRunEnds) {
  TempDir whole, split;
  std::ostringstream log;
  TrainConfig c = tiny_config(data_);
  apot::train::run_training(c, whole.str(), false, log);
  TrainConfig first_part = c;
  first_part.stop_after_epoch = 1;
  apot::train::run_training(first_part, split.str(), false, log);
  EXPECT_EQ(apot::train::read_checkpoint_meta(split / "last.ckpt").epoch, 1);
  apot::train::run_training(c, split.str(), /*resume=*/true, log);
  auto a = apot::train::load_checkpoint(whole / "last.ckpt");
  auto b = apot::train::load_checkpoint(split / "last.ckpt");
  const auto pa = a->named_parameters(), pb = b->named_parameters();
  ASSERT_EQ(pa.size(), pb.size());
  for (const auto& p : pa) EXPECT_TRUE(torch::allclose(p.value(), pb[p.key()], 1e-6, 1e-7)) << p.key();
  const auto ba = a->named_buffers(), bb = b->named_buffers();
  for (const auto& p : ba) EXPECT_TRUE(torch::allclose(p.value(), bb[p.key()], 1e-6, 1e-7)) << p.key();
  EXPECT_EQ(metrics(split.str()).size(), 3u);
}

// train.device: a GPU where one is visible (a short run whose checkpoint evaluates on the CPU to
// what the trainer measured on the GPU, and resumes there); one clear error where none is.
TEST_F(Trainer, OnTheGpuWhereThereIsOne) {
  TempDir out;
  std::ostringstream log;
  TrainConfig c = tiny_config(data_);
  c.device = "cuda";
  if (!torch::cuda::is_available()) {
    try {
      apot::train::run_training(c, out.str(), false, log);
      FAIL() << "trained on cuda without a GPU";
    } catch (const apot::train::ConfigError& e) {
      EXPECT_NE(std::string(e.what()).find("train.device"), std::string::npos) << e.what();
    }
    GTEST_SKIP() << "no CUDA device: checked the error only";
  }
  c.epochs = 2;
  c.stop_after_epoch = 1;
  apot::train::run_training(c, out.str(), false, log);
  c.stop_after_epoch = 0;
  apot::train::run_training(c, out.str(), /*resume=*/true, log);
  EXPECT_NE(log.str().find("on cuda"), std::string::npos) << log.str();
  const auto m = metrics(out.str());
  ASSERT_EQ(m.size(), 2u) << log.str();
  apot::train::Checkpoint meta;
  auto model = apot::train::load_checkpoint(out / "last.ckpt", &meta);
  for (const auto& p : model->parameters()) ASSERT_TRUE(p.device().is_cpu());
  apot::data::LoaderOptions lo;
  lo.batch_size = 64;
  lo.transform = apot::train::transform_for(
      meta.config, apot::data::parse_data_spec(c.data), apot::data::Split::test,
      *apot::data::open_dataset(apot::data::parse_data_spec(c.data), apot::data::Split::train, {}));
  apot::data::Loader test(apot::data::open_dataset(apot::data::parse_data_spec(c.data), apot::data::Split::test, {}),
                          lo);
  // cuDNN sums in another order than the CPU: a near tie may flip (at most 2 of the 64 images).
  EXPECT_NEAR(apot::train::evaluate(model, test).top1, m.back()["test_top1"].get<double>(), 100.0 * 2 / 64);
}

// The distillation loss: the plain cross-entropy at weight 0, nothing (and no gradient) from a
// teacher that agrees with the student at weight 1, and the formula in between.
TEST(TrainingLoss, Distillation) {
  torch::manual_seed(3);
  const torch::Tensor labels = torch::tensor({0, 2, 1, 2}, torch::kLong);
  const torch::Tensor student = torch::randn({4, 3}, torch::requires_grad()), teacher = torch::randn({4, 3});
  const torch::Tensor ce = torch::nn::functional::cross_entropy(student, labels);
  EXPECT_TRUE(torch::allclose(apot::train::training_loss(student, labels, 0.0), ce));
  EXPECT_TRUE(torch::allclose(apot::train::training_loss(student, labels, 0.0, teacher, 0.0, 4.0), ce));
  const torch::Tensor same = apot::train::training_loss(student, labels, 0.0, student.detach(), 1.0, 3.0);
  EXPECT_NEAR(same.item<double>(), 0.0, 1e-6);
  same.backward();
  EXPECT_LT(student.grad().abs().max().item<double>(), 1e-6);
  // By hand: T^2 * mean over the batch of sum p_t (log p_t - log p_s), at T = 2, weight 0.25.
  const double T = 2, w = 0.25;
  const torch::Tensor pt = torch::softmax(teacher / T, 1);
  const torch::Tensor kl =
      (pt * (torch::log_softmax(teacher / T, 1) - torch::log_softmax(student / T, 1))).sum(1).mean();
  const torch::Tensor want = (1 - w) * ce + w * T * T * kl;
  EXPECT_NEAR(apot::train::training_loss(student, labels, 0.0, teacher, w, T).item<double>(), want.item<double>(),
              1e-6);
}

TEST_F(Trainer, DistillationFromAFullPrecisionTeacher) {
  TempDir fp, plain, distilled;
  std::ostringstream log;
  TrainConfig teacher = tiny_config(data_);
  teacher.kind = "fp";
  teacher.epochs = 1;
  apot::train::run_training(teacher, fp.str(), false, log);
  TrainConfig c = tiny_config(data_);
  c.epochs = 1;
  apot::train::run_training(c, plain.str(), false, log);
  c.teacher = fp / "best.ckpt";
  c.distill_weight = 0.9;
  apot::train::run_training(c, distilled.str(), false, log);
  EXPECT_NE(log.str().find("distilled from"), std::string::npos) << log.str();
  EXPECT_NE(log.str().find("teacher: initialised from"), std::string::npos) << log.str();
  const double a = metrics(plain.str()).back()["train_loss"].get<double>();
  const double b = metrics(distilled.str()).back()["train_loss"].get<double>();
  EXPECT_TRUE(std::isfinite(b));
  EXPECT_NE(a, b) << "the teacher changes the loss";
  // Resuming reloads the teacher from the checkpoint's configuration.
  EXPECT_EQ(apot::train::read_checkpoint_meta(distilled / "last.ckpt").config.teacher, c.teacher);
}

// The recipe's initial clipping thresholds reach every quantised layer of a fresh model (they
// once stayed at the module defaults, 3 and 8, whatever the recipe said).
TEST(BuildModel, AlphasStartAtTheRecipesValues) {
  TrainConfig c;
  c.arch = "shufflenet_v2_x0_5_cifar";  // unsigned and signed activations, int8 first and last
  c.weight_alpha_init = 2.25;
  c.act_alpha_init = 1.5;
  apot::train::ModelInfo info;
  info.class_names.assign(10, "c");
  auto model = apot::train::build_model(c, info);
  size_t act = 0, weight = 0;
  for (const auto& p : model->named_parameters()) {
    const std::string& name = p.key();
    if (name.find("act_alpha") != std::string::npos) {
      EXPECT_EQ(p.value().item<double>(), 1.5) << name;
      ++act;
    } else if (name.find("weight_alpha") != std::string::npos) {
      EXPECT_EQ(p.value().item<double>(), 2.25) << name;
      ++weight;
    }
  }
  EXPECT_GT(act, 50u);
  EXPECT_EQ(act, weight);
}

TEST_F(Trainer, ProgressiveInitialisationFromACheckpoint) {
  TempDir w4, w3;
  std::ostringstream log;
  TrainConfig c = tiny_config(data_);
  c.epochs = 1;
  apot::train::run_training(c, w4.str(), false, log);
  TrainConfig lower = c;
  lower.weight_bits = lower.act_bits = 3;
  lower.init = w4 / "best.ckpt";
  lower.lr = 1e-9;  // barely moves: the weights must be those of the 4-bit run
  lower.act_alpha_lr = lower.weight_alpha_lr = 1e-9;
  apot::train::run_training(lower, w3.str(), false, log);
  EXPECT_NE(log.str().find("initialised from"), std::string::npos);
  auto a = apot::train::load_checkpoint(w4 / "best.ckpt");
  auto b = apot::train::load_checkpoint(w3 / "last.ckpt");
  EXPECT_TRUE(torch::allclose(a->conv("conv1")->weight, b->conv("conv1")->weight, 1e-5, 1e-6));
  EXPECT_EQ(b->named_parameters().size(), a->named_parameters().size());
}

TEST_F(Trainer, ProbeGivesEachLayersQuantisersAndCost) {
  TempDir out;
  std::ostringstream log;
  TrainConfig c = tiny_config(data_);
  c.epochs = 1;
  apot::train::run_training(c, out.str(), false, log);
  const auto r = apot::train::probe_checkpoint(out / "best.ckpt", "", 16);
  auto model = apot::train::load_checkpoint(out / "best.ckpt");
  const auto weight_layers = model->graph().weight_layers();
  ASSERT_EQ(r.layers.size(), weight_layers.size());
  EXPECT_EQ(r.images, 16);
  EXPECT_EQ(r.config["quant.kind"], "apot");
  // The first layer: int8 weights on the float image.
  EXPECT_EQ(r.layers[0].quant, "int8");
  EXPECT_EQ(r.layers[0].weight->level_set, "int8");
  EXPECT_FALSE(r.layers[0].input.has_value());
  // A quantised layer: its level sets times its alphas, every value counted once, and the
  // weight SQNR of the quantised weights against the normalised ones.
  const auto& l = r.layers.at(1);
  const auto* conv = model->conv(l.name);
  ASSERT_NE(conv, nullptr);
  EXPECT_EQ(l.quant, "W4A4 apot");
  const auto set = apot::levels::LevelSet::make(apot::levels::Kind::apot, 4, apot::levels::Role::weight);
  const double alpha = conv->weight_alpha.item<double>();
  ASSERT_EQ(l.weight->levels.size(), set.size());
  EXPECT_FLOAT_EQ(l.weight->levels.back(), float(alpha));
  EXPECT_EQ(l.weight->count, conv->weight.numel());
  EXPECT_EQ(std::accumulate(l.weight->usage.begin(), l.weight->usage.end(), int64_t(0)), l.weight->count);
  {
    torch::NoGradGuard no_grad;
    const torch::Tensor w = conv->normalized_weight().to(torch::kFloat64);
    const torch::Tensor q = conv->quantized_weight().to(torch::kFloat64);
    EXPECT_NEAR(l.weight->sqnr_db,
                10 * std::log10(w.square().sum().item<double>() / (w - q).square().sum().item<double>()), 1e-3);
  }
  ASSERT_TRUE(l.input.has_value());
  EXPECT_EQ(l.input->level_set, "apot-a4");
  EXPECT_EQ(l.input->levels.size(), 16u);
  EXPECT_EQ(std::accumulate(l.input->usage.begin(), l.input->usage.end(), int64_t(0)), l.input->count);
  EXPECT_TRUE(std::isfinite(l.output_sqnr_db));
  // The cost is the cost model's.
  apot::graph::Graph g = model->graph();
  g.infer_shapes(8, 8);
  EXPECT_NEAR(r.total_fixops(), apot::graph::compute_cost(g).fixops, 1e-6);
  EXPECT_THROW(apot::train::probe_checkpoint(out / "best.ckpt", "", 0), std::invalid_argument);
}

TEST_F(Trainer, NaNLossStopsWithAClearMessage) {
  TempDir out;
  std::ostringstream log;
  TrainConfig c = tiny_config(data_);
  c.kind = "fp";
  c.lr = 1e30;
  c.epochs = 2;
  try {
    apot::train::run_training(c, out.str(), false, log);
    FAIL() << "no error";
  } catch (const apot::train::TrainingError& e) {
    EXPECT_NE(std::string(e.what()).find("loss became"), std::string::npos) << e.what();
  }
}

TEST(StateDict, ExportImportRoundTripAndErrors) {
  TempDir dir;
  auto model = apot::qat::make_network("resnet20");
  apot::qat::export_state_dict(*model, dir / "m.pt");
  auto copy = apot::qat::make_network("resnet20");
  apot::qat::import_state_dict(*copy, dir / "m.pt");
  for (const auto& p : model->named_parameters())
    EXPECT_TRUE(torch::equal(p.value(), copy->named_parameters()[p.key()]));
  for (const auto& b : model->named_buffers()) EXPECT_TRUE(torch::equal(b.value(), copy->named_buffers()[b.key()]));
  // Torchvision spelling (fc) and a module. prefix are accepted.
  auto state = apot::qat::read_state_dict(dir / "m.pt");
  std::map<std::string, torch::Tensor> renamed;
  for (auto& [k, v] : state) renamed["module." + (k.rfind("linear.", 0) == 0 ? "fc." + k.substr(7) : k)] = v;
  std::map<std::string, torch::Tensor> stripped;
  for (auto& [k, v] : renamed) stripped[k.substr(7)] = v;
  EXPECT_NO_THROW(apot::qat::load_state_dict(*copy, stripped, "renamed"));
  // Wrong architecture: one error listing missing and wrongly shaped entries.
  auto other = apot::qat::make_network("resnet32");
  try {
    apot::qat::import_state_dict(*other, dir / "m.pt");
    FAIL() << "no error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("missing"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("layer1.3.conv1.weight"), std::string::npos) << e.what();
  }
  auto wrong_classes = apot::qat::make_network("resnet20", apot::graph::ArchOptions{3, 7});
  try {
    apot::qat::import_state_dict(*wrong_classes, dir / "m.pt");
    FAIL() << "no error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("wrong shape linear.weight"), std::string::npos) << e.what();
  }
  apot::test::write_bytes(dir / "junk.pt", {'n', 'o', 'p', 'e'});
  EXPECT_THROW(apot::qat::read_state_dict(dir / "junk.pt"), std::runtime_error);
  EXPECT_THROW(apot::train::load_checkpoint(dir / "m.pt"), apot::train::TrainingError);
}
