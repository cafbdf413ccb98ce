// InMemoryDataset and whole-file reading.
#include <cerrno>
#include <cstring>
#include <fstream>

#include "apot/data/dataset.h"

namespace apot::data {

InMemoryDataset::InMemoryDataset(std::string description, int height, int width, int channels,
                                 std::vector<uint8_t> pixels, std::vector<int64_t> labels,
                                 std::vector<std::string> class_names)
    : description_(std::move(description)),
      height_(height),
      width_(width),
      channels_(channels),
      pixels_(std::move(pixels)),
      labels_(std::move(labels)),
      class_names_(std::move(class_names)) {
  const size_t image_size = static_cast<size_t>(height_) * width_ * channels_;
  if (pixels_.size() != image_size * labels_.size())
    throw DataError(description_ + ": " + std::to_string(labels_.size()) + " labels but pixel data for " +
                    std::to_string(image_size ? pixels_.size() / image_size : 0) + " images");
  for (size_t i = 0; i < labels_.size(); ++i)
    if (labels_[i] < 0 || static_cast<size_t>(labels_[i]) >= class_names_.size())
      throw DataError(description_ + ": label " + std::to_string(labels_[i]) + " of example " + std::to_string(i) +
                      " is out of range (" + std::to_string(class_names_.size()) + " classes)");
}

Example InMemoryDataset::get(size_t index) const {
  if (index >= labels_.size()) throw DataError(description_ + ": index out of range");
  const size_t image_size = static_cast<size_t>(height_) * width_ * channels_;
  Example e;
  e.image.height = height_;
  e.image.width = width_;
  e.image.channels = channels_;
  e.image.pixels.assign(pixels_.begin() + index * image_size, pixels_.begin() + (index + 1) * image_size);
  e.label = labels_[index];
  return e;
}

std::vector<uint8_t> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw DataError(path + ": cannot open (" + std::strerror(errno) + ")");
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) throw DataError(path + ": read error");
  return bytes;
}

}  // namespace apot::data
