// Data set specs as written on the command line: "fashion-mnist", "mnist:/dir",
// "cifar10:/dir", "cifar100:/dir", "imagefolder:/dir" (dir/train and dir/test or dir/val, or
// dir itself when it holds the class folders), with per-data-set transform defaults.
#pragma once

#include <memory>
#include <string>

#include "apot/data/dataset.h"
#include "apot/data/transforms.h"

namespace apot::data {

constexpr const char* kFashionMnistDir = "/usr/share/datasets/fashion-mnist";

enum class Split { train, test };

struct DataSpec {
  std::string kind;  // fashion-mnist | mnist | cifar10 | cifar100 | imagefolder
  std::string path;
  std::string text() const { return path.empty() ? kind : kind + ":" + path; }
};

DataSpec parse_data_spec(const std::string& text);  // throws DataError with the accepted forms
std::shared_ptr<Dataset> open_dataset(const DataSpec& spec, Split split, ImageFolderOptions options = {});
// Mean/std and augmentation a data set is usually trained with (train) or evaluated with.
// ImageFolder data sets get the ImageNet recipe (resize 256, crop 224), unless `dataset` is
// given and its first image is small (shorter side <= 64, e.g. CIFAR as JPEG files): then the
// CIFAR recipe (no resize; random crop with padding of 1/8 of the side and flips for training).
TransformOptions default_transform(const DataSpec& spec, Split split, const Dataset* dataset = nullptr);
// A test transform made to give a model's input size (height x width, square): a model trained
// on resized images (data.resize, e.g. Fashion-MNIST at 32x32 for VGG) gets them resized and
// center-cropped at test time too. Leaves it alone where it already gives that size.
void fit_to_input(TransformOptions& t, int height, int width, const Dataset& dataset);

}  // namespace apot::data
