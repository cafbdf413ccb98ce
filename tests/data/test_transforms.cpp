// Transforms: crop, pad, flip, resize, channel conversion and normalisation.
#include <gtest/gtest.h>

#include "apot/data/transforms.h"
#include "data_test_util.h"

using apot::data::Image;
using apot::data::TransformOptions;

namespace {
Image make(int h, int w, int c) { return Image{h, w, c, apot::test::pattern(h, w, c)}; }
}  // namespace

TEST(Transforms, CenterCropAndIdentity) {
  const Image img = make(6, 8, 3);
  TransformOptions t;
  EXPECT_EQ(apot::data::transform_image(img, t, 1).pixels, img.pixels);
  t.crop = 4;
  const Image c = apot::data::transform_image(img, t, 1);
  ASSERT_EQ(c.height, 4);
  EXPECT_EQ(c.pixels[0], img.pixels[(1 * 8 + 2) * 3]);  // top-left of the centered window
}

TEST(Transforms, RandomCropWithPaddingIsDeterministicPerSeed) {
  const Image img = make(8, 8, 1);
  TransformOptions t;
  t.crop = 8;
  t.pad = 2;
  t.random_crop = true;
  t.hflip = true;
  const Image a = apot::data::transform_image(img, t, 42), b = apot::data::transform_image(img, t, 42);
  EXPECT_EQ(a.pixels, b.pixels);
  bool any_difference = false, any_zero_border = false;
  for (uint64_t seed = 0; seed < 40; ++seed) {
    const Image r = apot::data::transform_image(img, t, seed);
    any_difference |= r.pixels != a.pixels;
    for (uint8_t v : r.pixels) any_zero_border |= v == 0;
  }
  EXPECT_TRUE(any_difference);
  EXPECT_TRUE(any_zero_border);
}

TEST(Transforms, FlipMirrorsRows) {
  const Image img = make(2, 3, 1);
  TransformOptions t;
  t.hflip = true;
  for (uint64_t seed = 0; seed < 16; ++seed) {
    const Image r = apot::data::transform_image(img, t, seed);
    const bool flipped = r.pixels[0] == img.pixels[2];
    if (flipped) {
      EXPECT_EQ(r.pixels[2], img.pixels[0]);
      EXPECT_EQ(r.pixels[3], img.pixels[5]);
    } else {
      EXPECT_EQ(r.pixels, img.pixels);
    }
  }
}

TEST(Transforms, ResizeShorterSideAndChannels) {
  TransformOptions t;
  t.resize_shorter = 4;
  t.channels = 3;
  const Image r = apot::data::transform_image(make(8, 16, 1), t, 0);
  EXPECT_EQ(r.height, 4);
  EXPECT_EQ(r.width, 8);
  EXPECT_EQ(r.channels, 3);
  EXPECT_EQ(r.pixels[0], r.pixels[1]);
  Image flat{4, 4, 3, std::vector<uint8_t>(48, 77)};
  const Image same = apot::data::resize_bilinear(flat, 9, 5);
  for (uint8_t v : same.pixels) EXPECT_EQ(v, 77);
  TransformOptions grey;
  grey.channels = 1;
  Image rgb{1, 1, 3, {30, 60, 90}};
  EXPECT_EQ(apot::data::transform_image(rgb, grey, 0).pixels, std::vector<uint8_t>{60});
}

TEST(Transforms, Normalisation) {
  Image img{1, 2, 2, {0, 255, 51, 102}};
  TransformOptions t;
  t.mean = {0.5f, 0.0f};
  t.std = {0.5f, 2.0f};
  float out[4];
  apot::data::to_normalised_chw(img, t, out);
  EXPECT_FLOAT_EQ(out[0], -1.0f);  // channel 0, pixel 0
  EXPECT_FLOAT_EQ(out[1], (0.2f - 0.5f) / 0.5f);
  EXPECT_FLOAT_EQ(out[2], 0.5f);  // channel 1, pixel 0: 1.0 / 2
  TransformOptions bad;
  bad.mean = {0.5f};
  EXPECT_THROW(bad.validate(), apot::data::DataError);
  bad.std = {0.0f};
  EXPECT_THROW(bad.validate(), apot::data::DataError);
}
