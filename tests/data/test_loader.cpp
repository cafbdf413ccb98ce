// The loader: deterministic batches for any worker count, full epochs, errors from workers.
#include <gtest/gtest.h>

#include <set>

#include "apot/data/loader.h"
#include "data_test_util.h"

using apot::data::Batch;
using apot::data::InMemoryDataset;
using apot::data::Loader;
using apot::data::LoaderOptions;

namespace {

std::shared_ptr<InMemoryDataset> toy(int n) {
  std::vector<uint8_t> pixels(size_t(n) * 6 * 6);
  std::vector<int64_t> labels(n);
  for (int i = 0; i < n; ++i) {
    labels[i] = i % 3;
    for (int p = 0; p < 36; ++p) pixels[size_t(i) * 36 + p] = static_cast<uint8_t>(i + p);
  }
  return std::make_shared<InMemoryDataset>("toy", 6, 6, 1, pixels, labels, std::vector<std::string>{"a", "b", "c"});
}

std::vector<Batch> epoch(Loader& loader, int64_t e) {
  loader.start_epoch(e);
  std::vector<Batch> out;
  Batch b;
  while (loader.next(b)) out.push_back(b);
  return out;
}

LoaderOptions augmenting(int workers) {
  LoaderOptions o;
  o.batch_size = 7;
  o.seed = 11;
  o.workers = workers;
  o.transform.crop = 6;
  o.transform.pad = 1;
  o.transform.random_crop = true;
  o.transform.hflip = true;
  return o;
}

}  // namespace

TEST(Loader, SameSeedSameBatchesWhateverTheWorkerCount) {
  const auto ds = toy(50);
  Loader one(ds, augmenting(1)), four(ds, augmenting(4));
  const auto a = epoch(one, 3), b = epoch(four, 3);
  ASSERT_EQ(a.size(), 8u);
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_TRUE(torch::equal(a[i].images, b[i].images)) << i;
    EXPECT_TRUE(torch::equal(a[i].labels, b[i].labels)) << i;
  }
  const auto next_epoch = epoch(one, 4);
  EXPECT_FALSE(torch::equal(a[0].images, next_epoch[0].images));
}

TEST(Loader, EveryExampleOncePerEpochAndDropLast) {
  const auto ds = toy(23);
  LoaderOptions o;
  o.batch_size = 5;
  o.workers = 3;
  Loader loader(ds, o);
  std::multiset<float> firsts;
  size_t total = 0;
  for (const Batch& b : epoch(loader, 0)) {
    total += b.labels.numel();
    for (int64_t k = 0; k < b.images.size(0); ++k) firsts.insert(b.images[k][0][0][0].item<float>());
  }
  EXPECT_EQ(total, 23u);
  EXPECT_EQ(std::set<float>(firsts.begin(), firsts.end()).size(), 23u);
  o.drop_last = true;
  Loader dropping(ds, o);
  EXPECT_EQ(epoch(dropping, 0).size(), 4u);
  Loader subset(ds, o, {0, 1, 2, 3, 4, 5});
  EXPECT_EQ(subset.size(), 6u);
  EXPECT_EQ(subset.example_shape(), (std::vector<int64_t>{1, 6, 6}));
}

TEST(Loader, AStoppedEpochCanBeRestarted) {
  const auto ds = toy(40);
  LoaderOptions o;
  o.batch_size = 4;
  Loader loader(ds, o);
  loader.start_epoch(0);
  Batch b;
  ASSERT_TRUE(loader.next(b));
  EXPECT_EQ(epoch(loader, 1).size(), 10u);
}

TEST(Loader, WorkerErrorsReachTheConsumer) {
  apot::test::TempDir dir;
  const auto jpeg = apot::test::encode_jpeg(apot::test::pattern(4, 4, 3), 4, 4, 3);
  for (int i = 0; i < 6; ++i) apot::test::write_bytes(dir / ("a/" + std::to_string(i) + ".jpg"), jpeg);
  apot::test::write_bytes(dir / "a/9.jpg", {0xFF, 0xD8, 0xFF, 1, 2});
  LoaderOptions o;
  o.batch_size = 2;
  o.shuffle = false;
  Loader loader(apot::data::load_image_folder(dir.str()), o);
  loader.start_epoch(0);
  Batch b;
  EXPECT_THROW(
      {
        while (loader.next(b)) {
        }
      },
      apot::data::DataError);
  // Mixed sizes without a crop: a clear error.
  apot::test::write_bytes(dir / "a/9.jpg", apot::test::encode_jpeg(apot::test::pattern(5, 4, 3), 5, 4, 3));
  Loader mixed(apot::data::load_image_folder(dir.str()), o);
  mixed.start_epoch(0);
  EXPECT_THROW(
      {
        while (mixed.next(b)) {
        }
      },
      apot::data::DataError);
}
