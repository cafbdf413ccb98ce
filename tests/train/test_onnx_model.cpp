// ONNX models through the trainer's entry points (train::graph_of, train::initialise_from),
// as eval, quantize and train use them: the imported network computes PyTorch's logits.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "apot/onnx/onnx_import.h"
#include "apot/train/trainer.h"

namespace apot::train {
namespace {

std::string fixture(const std::string& name) { return std::string(APOT_SOURCE_DIR) + "/tests/fixtures/" + name; }

nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path);
  return nlohmann::json::parse(in);
}

ModelInfo fashion_info() {
  ModelInfo info;
  info.in_channels = 1;
  info.height = info.width = 28;
  for (int c = 0; c < 10; ++c) info.class_names.push_back(std::to_string(c));
  return info;
}

// The ONNX file's network, built and initialised as `apot train --set init=FILE` does.
qat::Network import(const std::string& file) {
  TrainConfig c;
  c.init = file;
  qat::Network model = qat::make_network(graph_of(c, fashion_info()));
  std::ostringstream log;
  initialise_from(model, file, "", log);
  EXPECT_NE(log.str().find("initialised from the ONNX model"), std::string::npos) << log.str();
  model->eval();
  return model;
}

void expect_logits(const std::string& onnx, const nlohmann::json& expected) {
  qat::Network model = import(fixture(onnx));
  const auto input = expected["input"].get<std::vector<float>>();
  const auto logits = expected["logits"].get<std::vector<float>>();
  const int64_t n = int64_t(input.size()) / (28 * 28);
  torch::NoGradGuard no_grad;
  const torch::Tensor out = model(torch::tensor(input).reshape({n, 1, 28, 28}));
  const torch::Tensor want = torch::tensor(logits).reshape({n, 10});
  EXPECT_LE((out - want).abs().max().item<float>(), 1e-4) << out << want;
}

#ifdef APOT_WITH_ONNX
TEST(OnnxModel, FoldedTinyCnnGivesPyTorchsLogits) {
  expect_logits("onnx/tiny_cnn.onnx", read_json(fixture("torch_files/tiny_cnn_expected.json")));
}

TEST(OnnxModel, OpsNetWithBatchNormsClipsGroupsAndMatMulGivesPyTorchsLogits) {
  expect_logits("onnx/ops_net.onnx", read_json(fixture("onnx/ops_net_expected.json")));
}

TEST(OnnxModel, OptionAShortcutGivesPyTorchsLogits) {
  expect_logits("onnx/shortcut_a.onnx", read_json(fixture("onnx/shortcut_a_expected.json")));
}

TEST(OnnxModel, AModelFileKeyNamesTheOnnxFileToo) {
  TrainConfig c;
  c.model_file = fixture("onnx/tiny_cnn.onnx");
  EXPECT_EQ(graph_of(c, fashion_info()).arch, "tiny_cnn");
}

TEST(OnnxModel, DataOfAnotherSizeOrClassCountIsAConfigError) {
  TrainConfig c;
  c.init = fixture("onnx/tiny_cnn.onnx");
  ModelInfo info = fashion_info();
  info.height = info.width = 32;
  try {
    graph_of(c, info);
    ADD_FAILURE() << "no error";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("takes 28x28 images, the data gives 32x32"), std::string::npos) << e.what();
  }
  info = fashion_info();
  info.class_names.resize(5);
  try {
    graph_of(c, info);
    ADD_FAILURE() << "no error";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("the data has 5 classes"), std::string::npos) << e.what();
  }
}
#endif

}  // namespace
}  // namespace apot::train
