// IDX and CIFAR readers on small files written by the tests, including every bad-input case.
#include <gtest/gtest.h>

#include "apot/data/dataset.h"
#include "apot/data/spec.h"
#include "data_test_util.h"

using apot::data::DataError;
using apot::test::idx_bytes;
using apot::test::TempDir;
using apot::test::write_bytes;

namespace {

void expect_error_mentions(const std::function<void()>& f, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "no error, expected one mentioning " << needle;
  } catch (const DataError& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

void write_mnist(const TempDir& dir, const std::string& prefix, int n, bool gz, uint8_t bad_label = 0) {
  std::vector<uint8_t> images(size_t(n) * 4 * 3), labels(n);
  for (size_t i = 0; i < images.size(); ++i) images[i] = static_cast<uint8_t>(i);
  for (int i = 0; i < n; ++i) labels[i] = static_cast<uint8_t>(i % 10);
  if (bad_label) labels[n - 1] = bad_label;
  const auto img = idx_bytes({uint32_t(n), 4, 3}, images), lab = idx_bytes({uint32_t(n)}, labels);
  if (gz) {
    apot::test::write_gzip(dir / (prefix + "-images-idx3-ubyte.gz"), img);
    apot::test::write_gzip(dir / (prefix + "-labels-idx1-ubyte.gz"), lab);
  } else {
    write_bytes(dir / (prefix + "-images-idx3-ubyte"), img);
    write_bytes(dir / (prefix + "-labels-idx1-ubyte"), lab);
  }
}

}  // namespace

TEST(Idx, ReadsPlainAndGzipFiles) {
  for (bool gz : {false, true}) {
    TempDir dir;
    write_mnist(dir, "train", 12, gz);
    const auto ds = apot::data::load_mnist_like(dir.str(), true, true);
    ASSERT_EQ(ds->size(), 12u);
    EXPECT_EQ(ds->num_classes(), 10u);
    const auto e = ds->get(5);
    EXPECT_EQ(e.label, 5);
    EXPECT_EQ(e.image.height, 4);
    EXPECT_EQ(e.image.width, 3);
    EXPECT_EQ(e.image.channels, 1);
    EXPECT_EQ(e.image.pixels[0], 5 * 12);
  }
}

TEST(Idx, BadFilesGiveOneClearError) {
  const auto good = idx_bytes({2, 2, 2}, std::vector<uint8_t>(8, 1));
  auto parse = [](const std::vector<uint8_t>& b) { apot::data::parse_idx(b.data(), b.size(), "f.idx"); };
  auto wrong_magic = good;
  wrong_magic[0] = 0x1f;
  expect_error_mentions([&] { parse(wrong_magic); }, "magic");
  auto float_type = good;
  float_type[2] = 0x0D;
  expect_error_mentions([&] { parse(float_type); }, "unsigned byte");
  auto truncated = good;
  truncated.pop_back();
  expect_error_mentions([&] { parse(truncated); }, "truncated");
  auto trailing = good;
  trailing.push_back(0);
  expect_error_mentions([&] { parse(trailing); }, "trailing");
  expect_error_mentions([&] { parse({0, 0, 8}); }, "too short");
  expect_error_mentions([&] { parse({0, 0, 8, 3, 0, 0}); }, "truncated IDX header");
  expect_error_mentions([&] { apot::data::read_idx("/nonexistent/x-idx3-ubyte"); }, "/nonexistent/x-idx3-ubyte");
  // Every error names the file.
  expect_error_mentions([&] { parse(wrong_magic); }, "f.idx");
}

TEST(Idx, DataSetLevelErrors) {
  TempDir dir;
  write_mnist(dir, "train", 5, false, /*bad_label=*/12);
  expect_error_mentions([&] { apot::data::load_mnist_like(dir.str(), true, true); }, "label 12");
  expect_error_mentions([&] { apot::data::load_mnist_like(dir.str(), false, true); }, "no t10k-");
  expect_error_mentions([&] { apot::data::load_mnist_like(dir / "missing", true, true); }, "directory not found");
  TempDir mismatch;
  write_bytes(mismatch / "train-images-idx3-ubyte", idx_bytes({3, 2, 2}, std::vector<uint8_t>(12)));
  write_bytes(mismatch / "train-labels-idx1-ubyte", idx_bytes({2}, {0, 1}));
  expect_error_mentions([&] { apot::data::load_mnist_like(mismatch.str(), true, false); }, "3 images but");
  TempDir gz_bad;
  write_bytes(gz_bad / "train-images-idx3-ubyte.gz", {0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 1, 2, 3});
  write_bytes(gz_bad / "train-labels-idx1-ubyte", idx_bytes({1}, {0}));
  EXPECT_THROW(apot::data::load_mnist_like(gz_bad.str(), true, false), DataError);
}

namespace {
std::vector<uint8_t> cifar_records(int n, bool cifar100, int label_offset = 0) {
  std::vector<uint8_t> b;
  for (int r = 0; r < n; ++r) {
    if (cifar100) b.push_back(static_cast<uint8_t>(r % 20));  // coarse
    b.push_back(static_cast<uint8_t>((r + label_offset) % (cifar100 ? 100 : 10)));
    for (int c = 0; c < 3; ++c)
      for (int p = 0; p < 1024; ++p) b.push_back(static_cast<uint8_t>(c * 50 + r + (p % 7)));
  }
  return b;
}
}  // namespace

TEST(Cifar, ReadsTenAndHundredWithPlanesToHwc) {
  TempDir dir;
  for (int i = 1; i <= 5; ++i)
    write_bytes(dir / ("data_batch_" + std::to_string(i) + ".bin"), cifar_records(3, false, i));
  write_bytes(dir / "test_batch.bin", cifar_records(4, false));
  const auto train = apot::data::load_cifar(dir.str(), true, false);
  EXPECT_EQ(train->size(), 15u);
  EXPECT_EQ(train->get(0).label, 1);
  const auto test = apot::data::load_cifar(dir.str(), false, false);
  ASSERT_EQ(test->size(), 4u);
  const auto e = test->get(2);
  EXPECT_EQ(e.image.channels, 3);
  EXPECT_EQ(e.image.pixels[0], 2);            // R of pixel 0
  EXPECT_EQ(e.image.pixels[1], 52);           // G of pixel 0
  EXPECT_EQ(e.image.pixels[2 * 3 + 2], 104);  // B of pixel 2: 100 + 2 + 2
  TempDir hundred;
  write_bytes(hundred / "cifar-100-binary/train.bin", cifar_records(3, true, 40));
  const auto c100 = apot::data::load_cifar(hundred.str(), true, true);
  EXPECT_EQ(c100->num_classes(), 100u);
  EXPECT_EQ(c100->get(2).label, 42);  // the fine label
}

TEST(Cifar, BadFiles) {
  TempDir dir;
  auto records = cifar_records(2, false);
  records.pop_back();
  write_bytes(dir / "test_batch.bin", records);
  expect_error_mentions([&] { apot::data::load_cifar(dir.str(), false, false); }, "test_batch.bin");
  expect_error_mentions([&] { apot::data::load_cifar(dir.str(), true, false); }, "data_batch_1.bin: file not found");
  auto bad_label = cifar_records(2, false);
  bad_label[0] = 10;
  std::vector<uint8_t> pixels;
  std::vector<int64_t> labels;
  expect_error_mentions(
      [&] { apot::data::parse_cifar_records(bad_label.data(), bad_label.size(), false, "b.bin", pixels, labels); },
      "label 10");
  expect_error_mentions([&] { apot::data::parse_cifar_records(nullptr, 0, false, "e.bin", pixels, labels); }, "empty");
}

TEST(DataSpec, ParsesTheShortForms) {
  EXPECT_EQ(apot::data::parse_data_spec("fashion-mnist").path, apot::data::kFashionMnistDir);
  EXPECT_EQ(apot::data::parse_data_spec("cifar10:/d").path, "/d");
  EXPECT_EQ(apot::data::parse_data_spec("imagefolder:/x/train").kind, "imagefolder");
  EXPECT_THROW(apot::data::parse_data_spec("imagenet"), DataError);
  EXPECT_THROW(apot::data::parse_data_spec("cifar10"), DataError);
  EXPECT_EQ(apot::data::default_transform(apot::data::parse_data_spec("cifar10:/d"), apot::data::Split::train).pad, 4);
}

// A model trained on resized images gets them resized at test time (apot eval, apot run); a
// model of the data's own size keeps the data set's test transform.
TEST(DataSpec, TestTransformFitsTheModelsInputSize) {
  TempDir dir;
  apot::test::write_quadrants(dir.str(), "t10k", 8, 3);  // 8x8 images
  const auto spec = apot::data::parse_data_spec("mnist:" + dir.str());
  const auto test = apot::data::open_dataset(spec, apot::data::Split::test);
  const apot::data::TransformOptions plain = apot::data::default_transform(spec, apot::data::Split::test);
  apot::data::TransformOptions t = plain;
  apot::data::fit_to_input(t, 8, 8, *test);
  EXPECT_EQ(t.resize_shorter, plain.resize_shorter);
  EXPECT_EQ(t.crop, plain.crop);
  apot::data::fit_to_input(t, 16, 16, *test);
  EXPECT_EQ(t.resize_shorter, 16);
  EXPECT_EQ(t.crop, 16);
  const apot::data::Image out = apot::data::transform_image(test->get(0).image, t, 1);
  EXPECT_EQ(out.height, 16);
  EXPECT_EQ(out.width, 16);
  apot::data::TransformOptions odd = plain;  // not square: left alone
  apot::data::fit_to_input(odd, 16, 12, *test);
  EXPECT_EQ(odd.crop, plain.crop);
}
