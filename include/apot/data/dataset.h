// Data sets: IDX (MNIST, Fashion-MNIST), CIFAR-10/100 binary batches and ImageFolder
// (JPEG/PNG, the ImageNet layout). Every data set hands out uint8 images in HWC layout with
// an integer label; transforms and the loader (loader.h) turn them into LibTorch batches.
#pragma once

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace apot::data {

// Every problem with input data: the message names the file and what is wrong with it.
class DataError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct Image {
  int height = 0, width = 0, channels = 0;
  std::vector<uint8_t> pixels;  // HWC, row-major
};

struct Example {
  Image image;
  int64_t label = 0;
};

class Dataset {
 public:
  virtual ~Dataset() = default;
  virtual size_t size() const = 0;
  // Thread-safe: called from several loader workers at once.
  virtual Example get(size_t index) const = 0;
  virtual const std::vector<std::string>& class_names() const = 0;
  size_t num_classes() const { return class_names().size(); }
  // Channels of the stored images (1 or 3); 0 when they differ between images.
  virtual int channels() const = 0;
  virtual std::string description() const = 0;
  // What names example `index` in a listing: its file for image folders, else its index.
  virtual std::string example_name(size_t index) const { return std::to_string(index); }
};

// All images of one shape in one array (IDX and CIFAR).
class InMemoryDataset : public Dataset {
 public:
  InMemoryDataset(std::string description, int height, int width, int channels, std::vector<uint8_t> pixels,
                  std::vector<int64_t> labels, std::vector<std::string> class_names);
  size_t size() const override { return labels_.size(); }
  Example get(size_t index) const override;
  const std::vector<std::string>& class_names() const override { return class_names_; }
  int channels() const override { return channels_; }
  std::string description() const override { return description_; }
  const std::vector<int64_t>& labels() const { return labels_; }

 private:
  std::string description_;
  int height_, width_, channels_;
  std::vector<uint8_t> pixels_;
  std::vector<int64_t> labels_;
  std::vector<std::string> class_names_;
};

// ---- IDX ----
struct IdxArray {
  std::vector<int64_t> dims;
  std::vector<uint8_t> data;
};
// Parses an IDX file held in memory (unsigned-byte data only); `name` is used in errors.
IdxArray parse_idx(const uint8_t* bytes, size_t size, const std::string& name);
// Reads an IDX file, gzip-compressed or not.
IdxArray read_idx(const std::string& path);
// An images file and a labels file of the same length, labels < class_names.size().
std::shared_ptr<InMemoryDataset> load_idx_dataset(const std::string& images_path, const std::string& labels_path,
                                                  std::vector<std::string> class_names, const std::string& name);
// MNIST / Fashion-MNIST directory with {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz].
std::shared_ptr<InMemoryDataset> load_mnist_like(const std::string& dir, bool train, bool fashion);

// ---- CIFAR binary ----
// Parses CIFAR records (1 label byte, or 2 for CIFAR-100 with the fine label second, then
// 3072 bytes of R, G, B planes).
void parse_cifar_records(const uint8_t* bytes, size_t size, bool cifar100, const std::string& name,
                         std::vector<uint8_t>& pixels_hwc, std::vector<int64_t>& labels);
// dir holds data_batch_1..5.bin / test_batch.bin (CIFAR-10) or train.bin / test.bin (CIFAR-100),
// directly or in cifar-10-batches-bin / cifar-100-binary.
std::shared_ptr<InMemoryDataset> load_cifar(const std::string& dir, bool train, bool cifar100);

// ---- ImageFolder ----
struct ImageFolderOptions {
  bool skip_corrupt = false;  // warn and substitute the next image instead of failing
  int decode_min_side = 0;    // JPEG: decode at the smallest libjpeg scale whose shorter side >= this
};
std::shared_ptr<Dataset> load_image_folder(const std::string& root, ImageFolderOptions options = {});

// Decodes a JPEG or PNG held in memory (by its signature); `name` is used in errors.
Image decode_image(const uint8_t* bytes, size_t size, const std::string& name, int min_side = 0);

// Reads a whole file (errors name it).
std::vector<uint8_t> read_file(const std::string& path);

}  // namespace apot::data
