// Recipe parsing, overrides and their errors.
#include <gtest/gtest.h>

#include "apot/train/config.h"
#include "apot/train/trainer.h"

using apot::train::config_from_toml_text;
using apot::train::ConfigError;

namespace {
const char* kRecipe = R"(
[model]
arch = "resnet20"
[data]
spec = "fashion-mnist"
batch_size = 64
[quant]
kind = "apot"
weight_bits = 3
act_bits = 3
[optim]
epochs = 7
lr = 0.04
[schedule]
kind = "multistep"
milestones = [3, 5]
)";
}

TEST(Config, ParsesARecipe) {
  const auto c = config_from_toml_text(kRecipe, "r.toml", {});
  EXPECT_EQ(c.batch_size, 64);
  EXPECT_EQ(c.weight_bits, 3);
  EXPECT_EQ(c.epochs, 7);
  EXPECT_DOUBLE_EQ(c.lr, 0.04);
  EXPECT_EQ(c.milestones, (std::vector<int>{3, 5}));
  EXPECT_EQ(c.act_alpha_lr, 0.1);  // default
}

TEST(Config, OverridesEveryKind) {
  const auto c = config_from_toml_text(
      kRecipe, "r.toml",
      {"optim.lr=0.5", "optim.epochs=2", "quant.kind=uniform", "data.augment=false", "init=runs/w4/best.ckpt",
       "schedule.milestones=[1]", "optim.weight_decay=3e-5", "quant.kind=\"pot\""});
  EXPECT_DOUBLE_EQ(c.lr, 0.5);
  EXPECT_EQ(c.epochs, 2);
  EXPECT_EQ(c.kind, "pot");
  EXPECT_FALSE(c.augment);
  EXPECT_EQ(c.init, "runs/w4/best.ckpt");
  EXPECT_EQ(c.milestones, (std::vector<int>{1}));
  EXPECT_DOUBLE_EQ(c.weight_decay, 3e-5);
  EXPECT_DOUBLE_EQ(config_from_toml_text(kRecipe, "r", {"optim.lr=1"}).lr, 1.0);  // integers are numbers
}

// A value toml++ 3.3 would misread (it reaches __builtin_unreachable on `1\xc3\xa9`) is a bare word,
// as any other value TOML cannot read is.
TEST(Config, NonAsciiBareWordsAreStrings) {
  EXPECT_EQ(config_from_toml_text(kRecipe, "r", {"init=1\xc3\xa9"}).init, "1\xc3\xa9");
  EXPECT_EQ(config_from_toml_text(kRecipe, "r", {"init=/home/jos\xc3\xa9/w4.ckpt"}).init, "/home/jos\xc3\xa9/w4.ckpt");
  EXPECT_EQ(config_from_toml_text(kRecipe, "r", {"init=\"\xef\xb1\x86.ckpt\""}).init, "\xef\xb1\x86.ckpt");
}

TEST(Config, ErrorsNameTheKey) {
  auto message = [](const std::string& text, std::vector<std::string> sets) {
    try {
      config_from_toml_text(text, "r.toml", sets);
    } catch (const ConfigError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message(kRecipe, {"optim.lrr=1"}).find("optim.lrr"), std::string::npos);
  EXPECT_NE(message(kRecipe, {"optim.epochs=two"}).find("optim.epochs"), std::string::npos);
  EXPECT_NE(message(kRecipe, {"optim.lr"}).find("key=value"), std::string::npos);
  EXPECT_NE(message("[optim]\nlr = \"fast\"\n", {}).find("optim.lr"), std::string::npos);
  EXPECT_NE(message("[optim\n", {}).find("r.toml:"), std::string::npos);
  EXPECT_NE(message(kRecipe, {"quant.weight_bits=9"}).find("quant"), std::string::npos);
  EXPECT_NE(message(kRecipe, {"model.arch=vgg"}).find("model.arch"), std::string::npos);
  EXPECT_NE(message("[surprise]\nx = 1\n", {}).find("surprise.x"), std::string::npos);
  EXPECT_NE(message(kRecipe, {"distill.weight=1.5"}).find("distill.weight"), std::string::npos);
  EXPECT_NE(message(kRecipe, {"distill.temperature=0"}).find("distill.temperature"), std::string::npos);
  EXPECT_NE(message(kRecipe, {"train.device=gpu"}).find("train.device"), std::string::npos);
  EXPECT_NE(message(kRecipe, {"train.device=cuda:x"}).find("train.device"), std::string::npos);
}

TEST(Config, Device) {
  EXPECT_EQ(config_from_toml_text(kRecipe, "r", {}).device, "cpu");
  EXPECT_EQ(config_from_toml_text(kRecipe, "r", {"train.device=cuda"}).device, "cuda");
  EXPECT_EQ(config_from_toml_text("[train]\ndevice = \"cuda:1\"\n", "r", {}).device, "cuda:1");
}

TEST(Config, MemoryFormat) {
  using apot::train::training_memory_format;
  const auto c = config_from_toml_text(kRecipe, "r", {});
  EXPECT_EQ(c.memory_format, "auto");
  EXPECT_EQ(training_memory_format(c, torch::kCPU), at::MemoryFormat::ChannelsLast);
  EXPECT_EQ(training_memory_format(c, torch::Device("cuda")), at::MemoryFormat::Contiguous);
  const auto nchw = config_from_toml_text(kRecipe, "r", {"train.memory_format=contiguous"});
  EXPECT_EQ(training_memory_format(nchw, torch::kCPU), at::MemoryFormat::Contiguous);
  const auto nhwc = config_from_toml_text("[train]\nmemory_format = \"channels_last\"\n", "r", {});
  EXPECT_EQ(training_memory_format(nhwc, torch::Device("cuda")), at::MemoryFormat::ChannelsLast);
  EXPECT_THROW(config_from_toml_text(kRecipe, "r", {"train.memory_format=nhwc"}), apot::train::ConfigError);
}

TEST(Config, ConvPrecision) {
  using apot::qat::ConvPrecision;
  using apot::train::training_conv_precision;
  const auto c = config_from_toml_text(kRecipe, "r", {});
  EXPECT_EQ(c.conv_precision, "fp32");
  EXPECT_EQ(training_conv_precision(c, torch::kCPU), ConvPrecision::fp32);
  const auto bf16 = config_from_toml_text(kRecipe, "r", {"train.conv_precision=bf16"});
  EXPECT_EQ(training_conv_precision(bf16, torch::kCPU), ConvPrecision::bf16);
  const auto automatic = config_from_toml_text(kRecipe, "r", {"train.conv_precision=auto"});
  EXPECT_EQ(training_conv_precision(automatic, torch::kCPU),
            apot::qat::cpu_has_native_bf16() ? ConvPrecision::bf16 : ConvPrecision::fp32);
  EXPECT_EQ(training_conv_precision(automatic, torch::Device("cuda")), ConvPrecision::fp32);
  try {
    config_from_toml_text(kRecipe, "r", {"train.conv_precision=fp16"});
    FAIL() << "fp16 accepted";
  } catch (const apot::train::ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("train.conv_precision"), std::string::npos) << e.what();
  }
}

TEST(Config, Distillation) {
  const auto c =
      config_from_toml_text(std::string(kRecipe) + "[distill]\nteacher = \"runs/fp/best.ckpt\"\nweight = 0.7\n",
                            "r.toml", {"distill.temperature=2"});
  EXPECT_EQ(c.teacher, "runs/fp/best.ckpt");
  EXPECT_DOUBLE_EQ(c.distill_weight, 0.7);
  EXPECT_DOUBLE_EQ(c.temperature, 2.0);
  EXPECT_TRUE(config_from_toml_text(kRecipe, "r.toml", {}).teacher.empty());  // off by default
}

TEST(Config, JsonRoundTrip) {
  const auto c = config_from_toml_text(kRecipe, "r.toml", {"run.seed=99"});
  const auto back = apot::train::config_from_json(apot::train::config_to_json(c));
  EXPECT_EQ(apot::train::config_to_json(back), apot::train::config_to_json(c));
  EXPECT_EQ(back.seed, 99u);
}
