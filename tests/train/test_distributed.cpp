// Data-parallel training (c10d, Gloo) with the ranks as threads of this process: two ranks of
// batch 64 end where one process of batch 128 ends; a rank that never arrives is one clear error.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "apot/train/distributed.h"
#include "apot/train/trainer.h"
#include "data_test_util.h"

using apot::test::TempDir;
using apot::train::Communicator;
using apot::train::DistributedOptions;
using apot::train::TrainConfig;

namespace {

// No batch norm: with it, two ranks' local statistics differ from one rank's unless they are
// synchronised (kBatchNormModel, train.sync_batch_norm).
constexpr const char* kModel = R"(name = "no-bn"
[input]
channels = 1
[[layer]]
name = "conv1"
op = "conv"
out_channels = 8
kernel = 3
padding = 1
bias = true
activation = "relu"
[[layer]]
name = "conv2"
op = "conv"
out_channels = 16
kernel = 3
stride = 2
padding = 1
bias = true
activation = "relu"
[[layer]]
name = "gap"
op = "global_avg_pool"
[[layer]]
name = "fc"
op = "linear"
out_channels = 10
bias = true
)";

// The same with batch norm after both convolutions.
constexpr const char* kBatchNormModel = R"(name = "bn"
[input]
channels = 1
[[layer]]
name = "conv1"
op = "conv"
out_channels = 8
kernel = 3
padding = 1
batch_norm = "bn1"
activation = "relu"
[[layer]]
name = "conv2"
op = "conv"
out_channels = 16
kernel = 3
stride = 2
padding = 1
batch_norm = "bn2"
activation = "relu"
[[layer]]
name = "gap"
op = "global_avg_pool"
[[layer]]
name = "fc"
op = "linear"
out_channels = 10
bias = true
)";

class Distributed : public ::testing::Test {
 protected:
  void SetUp() override {
#ifndef APOT_WITH_DISTRIBUTED
    GTEST_SKIP() << "built without c10d's Gloo headers (libgloo-dev)";
#endif
    apot::test::write_quadrants(data_.str(), "train", 2688, 1);  // 2,560 for training: 20 steps of 128
    apot::test::write_quadrants(data_.str(), "t10k", 96, 2);
    std::ofstream(data_ / "model.toml") << kModel;
    std::ofstream(data_ / "bn.toml") << kBatchNormModel;
  }
  TrainConfig config() const {
    TrainConfig c;
    c.model_file = data_ / "model.toml";
    c.data = "mnist:" + data_.str();
    c.augment = true;
    c.val_size = 128;
    c.eval_batch_size = 64;
    c.workers = 1;
    c.epochs = 1;
    c.lr = 0.05;
    c.act_alpha_init = 4.0;
    c.threads = 1;
    return c;
  }
  TempDir data_;
};

// Trains 20 steps as one process of batch 128 and as two ranks of batch 64 (threads of this
// process) from a common starting point; expects the same parameters, buffers and metrics.
void expect_two_ranks_equal_one(TrainConfig c) {
  // A common starting point, so that no run depends on the random initialisation.
  TempDir start, one, two;
  std::ostringstream log;
  TrainConfig first = c;
  first.max_steps_per_epoch = 1;
  apot::train::run_training(first, start.str(), false, log);
  c.init = start / "last.ckpt";

  TrainConfig single = c;
  single.batch_size = 128;
  apot::train::run_training(single, one.str(), false, log);

  TrainConfig per_rank = c;
  per_rank.batch_size = 64;
  const int port = apot::train::free_local_port();
  std::string errors[2];
  std::ostringstream logs[2];
  std::vector<std::thread> ranks;
  for (int r = 0; r < 2; ++r)
    ranks.emplace_back([&, r] {
      try {
        DistributedOptions o;
        o.rank = r;
        o.world_size = 2;
        o.master_port = port;
        o.timeout = std::chrono::milliseconds(30000);
        Communicator comm(o);
        apot::train::run_training(per_rank, two.str(), false, logs[r], &comm);
      } catch (const std::exception& e) {
        errors[r] = e.what();
      }
    });
  for (auto& t : ranks) t.join();
  ASSERT_EQ(errors[0], "");
  ASSERT_EQ(errors[1], "");
  EXPECT_NE(logs[0].str().find("2 ranks x batch 64 = global batch 128"), std::string::npos) << logs[0].str();
  EXPECT_EQ(logs[1].str(), "");  // rank 1 reports nothing

  const auto ma = apot::train::load_checkpoint(one / "last.ckpt"), mb = apot::train::load_checkpoint(two / "last.ckpt");
  auto a = ma->named_parameters(), b = mb->named_parameters();
  for (const auto& p : ma->named_buffers()) a.insert(p.key(), p.value());
  for (const auto& p : mb->named_buffers()) b.insert(p.key(), p.value());
  ASSERT_EQ(a.size(), b.size());
  double largest = 0;
  for (const auto& p : a) {
    ASSERT_TRUE(b.contains(p.key())) << p.key();
    const torch::Tensor x = p.value().to(torch::kFloat64), y = b[p.key()].to(torch::kFloat64);
    largest = std::max(largest, (x - y).abs().max().item<double>());
    EXPECT_TRUE(torch::allclose(x, y, 1e-5, 1e-5)) << p.key() << " differs by " << (x - y).abs().max().item<double>();
  }
  ::testing::Test::RecordProperty("largest_difference", std::to_string(largest));
  // Both trained 20 steps: the same metrics, evaluated on shards and reduced, as one process.
  std::ifstream m1(one / "metrics.jsonl"), m2(two / "metrics.jsonl");
  const auto j1 = nlohmann::json::parse(m1), j2 = nlohmann::json::parse(m2);
  EXPECT_EQ(j2["ranks"], 2);
  EXPECT_NEAR(j1["test_top1"].get<double>(), j2["test_top1"].get<double>(), 1e-9);
  EXPECT_NEAR(j1["val_top1"].get<double>(), j2["val_top1"].get<double>(), 1e-9);
  EXPECT_NEAR(j1["train_loss"].get<double>(), j2["train_loss"].get<double>(), 1e-4);
}

}  // namespace

TEST_F(Distributed, TwoRanksOfBatch64EqualOneOfBatch128) { expect_two_ranks_equal_one(config()); }

// With batch norm, synchronised: the same, buffers (running statistics) included.
TEST_F(Distributed, WithSynchronisedBatchNormTwoRanksEqualOne) {
  TrainConfig c = config();
  c.model_file = data_ / "bn.toml";
  c.sync_batch_norm = true;
  expect_two_ranks_equal_one(c);
}

TEST(DistributedSetup, AMissingRankIsOneClearErrorWithinTheTimeout) {
#ifndef APOT_WITH_DISTRIBUTED
  GTEST_SKIP() << "built without c10d's Gloo headers (libgloo-dev)";
#endif
  DistributedOptions o;
  o.rank = 0;
  o.world_size = 2;
  o.master_port = apot::train::free_local_port();
  o.timeout = std::chrono::milliseconds(2000);
  const auto begin = std::chrono::steady_clock::now();
  try {
    Communicator comm(o);
    FAIL() << "a job of two ranks started with one";
  } catch (const apot::train::DistributedError& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("rank 0"), std::string::npos) << message;
    EXPECT_EQ(message.find('\n'), std::string::npos) << message;
  }
  EXPECT_LT(std::chrono::steady_clock::now() - begin, std::chrono::seconds(30));
}

TEST(DistributedSetup, TorchrunVariables) {
  ::setenv("WORLD_SIZE", "4", 1);
  ::setenv("RANK", "3", 1);
  ::setenv("LOCAL_RANK", "1", 1);
  ::setenv("MASTER_ADDR", "10.0.0.7", 1);
  ::setenv("MASTER_PORT", "29511", 1);
  ::setenv("TORCHELASTIC_USE_AGENT_STORE", "True", 1);
  const DistributedOptions o = apot::train::distributed_from_env();
  EXPECT_EQ(o.world_size, 4);
  EXPECT_EQ(o.rank, 3);
  EXPECT_EQ(o.local_rank, 1);
  EXPECT_EQ(o.master_addr, "10.0.0.7");
  EXPECT_EQ(o.master_port, 29511);
  EXPECT_TRUE(o.agent_store);
  ::setenv("RANK", "4", 1);
  EXPECT_THROW(apot::train::distributed_from_env(), apot::train::DistributedError);
  ::setenv("RANK", "x", 1);
  EXPECT_THROW(apot::train::distributed_from_env(), apot::train::DistributedError);
  for (const char* v :
       {"WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_USE_AGENT_STORE"})
    ::unsetenv(v);
  EXPECT_FALSE(apot::train::distributed_from_env().enabled());
}
