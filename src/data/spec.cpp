// Data set specs and their defaults.
#include "apot/data/spec.h"

#include <algorithm>
#include <filesystem>

namespace apot::data {

DataSpec parse_data_spec(const std::string& text) {
  const size_t colon = text.find(':');
  DataSpec spec{text.substr(0, colon), colon == std::string::npos ? "" : text.substr(colon + 1)};
  const bool known = spec.kind == "fashion-mnist" || spec.kind == "mnist" || spec.kind == "cifar10" ||
                     spec.kind == "cifar100" || spec.kind == "imagefolder";
  if (!known)
    throw DataError("unknown data set '" + text +
                    "' (expected fashion-mnist[:DIR], mnist:DIR, cifar10:DIR, cifar100:DIR or imagefolder:DIR)");
  if (spec.kind == "fashion-mnist" && spec.path.empty()) spec.path = kFashionMnistDir;
  if (spec.path.empty()) throw DataError("data set '" + text + "' needs a directory: " + spec.kind + ":DIR");
  return spec;
}

namespace {
std::string image_folder_split(const std::string& root, Split split) {
  namespace fs = std::filesystem;
  const std::vector<std::string> names =
      split == Split::train ? std::vector<std::string>{"train"} : std::vector<std::string>{"test", "val"};
  for (const std::string& n : names)
    if (fs::is_directory(fs::path(root) / n)) return (fs::path(root) / n).string();
  return root;  // the directory itself holds the class folders
}
}  // namespace

std::shared_ptr<Dataset> open_dataset(const DataSpec& spec, Split split, ImageFolderOptions options) {
  const bool train = split == Split::train;
  if (spec.kind == "fashion-mnist" || spec.kind == "mnist")
    return load_mnist_like(spec.path, train, spec.kind != "mnist");
  if (spec.kind == "cifar10" || spec.kind == "cifar100") return load_cifar(spec.path, train, spec.kind == "cifar100");
  if (spec.kind == "imagefolder") return load_image_folder(image_folder_split(spec.path, split), options);
  throw DataError("unknown data set kind " + spec.kind);
}

TransformOptions default_transform(const DataSpec& spec, Split split, const Dataset* dataset) {
  TransformOptions t;
  const bool train = split == Split::train;
  if (spec.kind == "fashion-mnist" || spec.kind == "mnist") {
    t.mean = {spec.kind == "mnist" ? 0.1307f : 0.2860f};
    t.std = {spec.kind == "mnist" ? 0.3081f : 0.3530f};
    if (train && spec.kind == "fashion-mnist") {
      t.crop = 28;
      t.pad = 2;
      t.random_crop = true;
      t.hflip = true;
    }
  } else if (spec.kind == "cifar10" || spec.kind == "cifar100") {
    t.mean = {0.4914f, 0.4822f, 0.4465f};
    t.std = {0.2470f, 0.2435f, 0.2616f};
    if (train) {
      t.crop = 32;
      t.pad = 4;
      t.random_crop = true;
      t.hflip = true;
    }
  } else {  // ImageNet layout
    t.channels = 3;
    t.mean = {0.485f, 0.456f, 0.406f};
    t.std = {0.229f, 0.224f, 0.225f};
    if (dataset && dataset->size() > 0) {
      const Image first = dataset->get(0).image;
      const int side = std::min(first.height, first.width);
      if (side <= 64) {
        t.crop = side;
        t.pad = side / 8;
        t.random_crop = train;
        t.hflip = train;
        return t;
      }
    }
    t.resize_shorter = 256;
    t.crop = 224;
    t.random_crop = train;
    t.hflip = train;
  }
  return t;
}

void fit_to_input(TransformOptions& t, int height, int width, const Dataset& dataset) {
  if (height <= 0 || height != width || t.crop == height || dataset.size() == 0) return;
  const Image first = dataset.get(0).image;
  if (t.crop == 0 && t.resize_shorter == 0 && first.height == height && first.width == width) return;
  t.resize_shorter = height;
  t.crop = height;
  t.random_crop = false;
}

}  // namespace apot::data
