// JPEG / PNG decoding and the ImageFolder layout, with corrupt and missing files.
#include <gtest/gtest.h>

#include "apot/data/dataset.h"
#include "data_test_util.h"

using apot::data::DataError;
using apot::test::TempDir;

TEST(DecodeImage, JpegRgbGreyAndScaled) {
  const auto rgb = apot::test::pattern(24, 32, 3);
  const auto jpeg = apot::test::encode_jpeg(rgb, 24, 32, 3, 98);
  const auto img = apot::data::decode_image(jpeg.data(), jpeg.size(), "a.jpg");
  ASSERT_EQ(img.height, 24);
  ASSERT_EQ(img.width, 32);
  ASSERT_EQ(img.channels, 3);
  double error = 0;
  for (size_t i = 0; i < rgb.size(); ++i) error += std::abs(int(img.pixels[i]) - int(rgb[i]));
  EXPECT_LT(error / rgb.size(), 6.0);
  const auto grey = apot::test::encode_jpeg(apot::test::pattern(8, 8, 1), 8, 8, 1);
  EXPECT_EQ(apot::data::decode_image(grey.data(), grey.size(), "g.jpg").channels, 1);
  // Scaled decoding: the smallest scale whose shorter side is still >= 6 is 1/4 (6x8).
  const auto scaled = apot::data::decode_image(jpeg.data(), jpeg.size(), "a.jpg", 6);
  EXPECT_EQ(scaled.height, 6);
  EXPECT_EQ(scaled.width, 8);
}

TEST(DecodeImage, PngIsLossless) {
  const auto rgb = apot::test::pattern(5, 7, 3);
  const auto png = apot::test::encode_png(rgb, 5, 7, 3);
  const auto img = apot::data::decode_image(png.data(), png.size(), "a.png");
  EXPECT_EQ(img.pixels, rgb);
  const auto grey = apot::test::pattern(3, 3, 1);
  const auto gpng = apot::test::encode_png(grey, 3, 3, 1);
  EXPECT_EQ(apot::data::decode_image(gpng.data(), gpng.size(), "g.png").pixels, grey);
}

TEST(DecodeImage, CorruptDataIsAnErrorNamingTheFile) {
  auto jpeg = apot::test::encode_jpeg(apot::test::pattern(16, 16, 3), 16, 16, 3);
  std::vector<uint8_t> header_only(jpeg.begin(), jpeg.begin() + 20);
  std::vector<uint8_t> text{'h', 'e', 'l', 'l', 'o'};
  auto png = apot::test::encode_png(apot::test::pattern(4, 4, 3), 4, 4, 3);
  png.resize(png.size() / 2);
  for (const auto& bad : {header_only, text, png, std::vector<uint8_t>{}}) {
    try {
      apot::data::decode_image(bad.data(), bad.size(), "broken.img");
      ADD_FAILURE() << "decoded a corrupt image";
    } catch (const DataError& e) {
      EXPECT_NE(std::string(e.what()).find("broken.img"), std::string::npos) << e.what();
    }
  }
}

TEST(ImageFolder, ClassesSortedFilesSortedLabelsByFolder) {
  TempDir dir;
  const auto jpeg = apot::test::encode_jpeg(apot::test::pattern(8, 8, 3), 8, 8, 3);
  const auto png = apot::test::encode_png(apot::test::pattern(8, 8, 3), 8, 8, 3);
  apot::test::write_bytes(dir / "zebra/2.jpg", jpeg);
  apot::test::write_bytes(dir / "zebra/1.png", png);
  apot::test::write_bytes(dir / "ant/a.JPEG", jpeg);
  apot::test::write_bytes(dir / "ant/readme.txt", {'x'});  // not an image: ignored
  const auto ds = apot::data::load_image_folder(dir.str());
  ASSERT_EQ(ds->class_names(), (std::vector<std::string>{"ant", "zebra"}));
  ASSERT_EQ(ds->size(), 3u);
  EXPECT_EQ(ds->get(0).label, 0);
  EXPECT_EQ(ds->get(1).label, 1);
  EXPECT_EQ(ds->get(1).image.pixels, apot::test::pattern(8, 8, 3));  // 1.png sorts before 2.jpg
}

TEST(ImageFolder, BadLayouts) {
  TempDir empty_class;
  apot::test::write_bytes(empty_class / "a/x.jpg", apot::test::encode_jpeg(apot::test::pattern(4, 4, 3), 4, 4, 3));
  std::filesystem::create_directories(empty_class / "b");
  EXPECT_THROW(apot::data::load_image_folder(empty_class.str()), DataError);
  TempDir no_classes;
  EXPECT_THROW(apot::data::load_image_folder(no_classes.str()), DataError);
  EXPECT_THROW(apot::data::load_image_folder(no_classes / "missing"), DataError);
}

TEST(ImageFolder, CorruptImageFailsOrIsSkippedWithAWarning) {
  TempDir dir;
  const auto jpeg = apot::test::encode_jpeg(apot::test::pattern(4, 4, 3), 4, 4, 3);
  apot::test::write_bytes(dir / "a/0.jpg", jpeg);
  apot::test::write_bytes(dir / "a/1.jpg", {0xFF, 0xD8, 0xFF, 0x00, 0x01});
  apot::test::write_bytes(dir / "b/2.jpg", jpeg);
  const auto strict = apot::data::load_image_folder(dir.str());
  try {
    strict->get(1);
    ADD_FAILURE() << "no error";
  } catch (const DataError& e) {
    EXPECT_NE(std::string(e.what()).find("1.jpg"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("skip_corrupt"), std::string::npos) << e.what();
  }
  apot::data::ImageFolderOptions skip;
  skip.skip_corrupt = true;
  const auto lenient = apot::data::load_image_folder(dir.str(), skip);
  testing::internal::CaptureStderr();
  const auto e = lenient->get(1);
  const std::string warning = testing::internal::GetCapturedStderr();
  EXPECT_EQ(e.label, 1);  // the next image (b/2.jpg) stands in
  EXPECT_NE(warning.find("1.jpg"), std::string::npos) << warning;
}
