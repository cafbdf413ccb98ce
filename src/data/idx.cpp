// IDX files (MNIST, Fashion-MNIST), plain or gzip-compressed (zlib reads both).
#include <zlib.h>

#include <filesystem>

#include "apot/data/dataset.h"

namespace apot::data {
namespace {

std::vector<uint8_t> read_maybe_gzip(const std::string& path) {
  if (!std::filesystem::exists(path)) throw DataError(path + ": file not found");
  gzFile f = gzopen(path.c_str(), "rb");
  if (!f) throw DataError(path + ": cannot open");
  std::vector<uint8_t> out;
  uint8_t buffer[1 << 16];
  for (;;) {
    const int n = gzread(f, buffer, sizeof buffer);
    if (n < 0) {
      int code = 0;
      const std::string message = gzerror(f, &code);
      gzclose(f);
      throw DataError(path + ": corrupt or truncated gzip data (" + message + ")");
    }
    if (n == 0) break;
    out.insert(out.end(), buffer, buffer + n);
  }
  gzclose(f);
  return out;
}

std::string find_with_optional_gz(const std::string& dir, const std::string& stem) {
  for (const std::string& candidate : {dir + "/" + stem, dir + "/" + stem + ".gz"})
    if (std::filesystem::exists(candidate)) return candidate;
  throw DataError(dir + ": no " + stem + " or " + stem + ".gz");
}

}  // namespace

IdxArray parse_idx(const uint8_t* bytes, size_t size, const std::string& name) {
  if (size < 4) throw DataError(name + ": too short for an IDX header");
  if (bytes[0] != 0 || bytes[1] != 0) throw DataError(name + ": wrong magic number (not an IDX file)");
  if (bytes[2] != 0x08)
    throw DataError(name + ": IDX element type " + std::to_string(bytes[2]) + " is not unsigned byte");
  const int ndims = bytes[3];
  if (ndims < 1 || ndims > 4) throw DataError(name + ": IDX file with " + std::to_string(ndims) + " dimensions");
  if (size < 4 + 4 * static_cast<size_t>(ndims)) throw DataError(name + ": truncated IDX header");
  IdxArray a;
  uint64_t count = 1;
  for (int d = 0; d < ndims; ++d) {
    const uint8_t* p = bytes + 4 + 4 * d;
    const uint32_t dim = (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | p[3];
    if (dim == 0 || dim > (1u << 28)) throw DataError(name + ": implausible IDX dimension " + std::to_string(dim));
    count *= dim;
    if (count > (uint64_t{1} << 34)) throw DataError(name + ": IDX data too large");
    a.dims.push_back(dim);
  }
  const size_t header = 4 + 4 * static_cast<size_t>(ndims);
  if (size - header != count)
    throw DataError(name + ": " + (size - header < count ? "truncated" : "trailing bytes in") + " IDX data (expected " +
                    std::to_string(count) + " bytes, found " + std::to_string(size - header) + ")");
  a.data.assign(bytes + header, bytes + size);
  return a;
}

IdxArray read_idx(const std::string& path) {
  const std::vector<uint8_t> bytes = read_maybe_gzip(path);
  return parse_idx(bytes.data(), bytes.size(), path);
}

std::shared_ptr<InMemoryDataset> load_idx_dataset(const std::string& images_path, const std::string& labels_path,
                                                  std::vector<std::string> class_names, const std::string& name) {
  IdxArray images = read_idx(images_path);
  const IdxArray labels = read_idx(labels_path);
  if (images.dims.size() != 3) throw DataError(images_path + ": expected 3 dimensions (N, H, W)");
  if (labels.dims.size() != 1) throw DataError(labels_path + ": expected 1 dimension (N)");
  if (images.dims[0] != labels.dims[0])
    throw DataError(images_path + " has " + std::to_string(images.dims[0]) + " images but " + labels_path + " has " +
                    std::to_string(labels.dims[0]) + " labels");
  std::vector<int64_t> label_values(labels.data.begin(), labels.data.end());
  for (size_t i = 0; i < label_values.size(); ++i)
    if (static_cast<size_t>(label_values[i]) >= class_names.size())
      throw DataError(labels_path + ": label " + std::to_string(label_values[i]) + " at index " + std::to_string(i) +
                      " is out of range (" + std::to_string(class_names.size()) + " classes)");
  return std::make_shared<InMemoryDataset>(name, int(images.dims[1]), int(images.dims[2]), 1, std::move(images.data),
                                           std::move(label_values), std::move(class_names));
}

std::shared_ptr<InMemoryDataset> load_mnist_like(const std::string& dir, bool train, bool fashion) {
  if (!std::filesystem::is_directory(dir)) throw DataError(dir + ": directory not found");
  const std::string prefix = train ? "train" : "t10k";
  std::vector<std::string> classes;
  if (fashion)
    classes = {"t-shirt/top", "trouser", "pullover", "dress", "coat",
               "sandal",      "shirt",   "sneaker",  "bag",   "ankle boot"};
  else
    for (int d = 0; d < 10; ++d) classes.push_back(std::to_string(d));
  return load_idx_dataset(
      find_with_optional_gz(dir, prefix + "-images-idx3-ubyte"),
      find_with_optional_gz(dir, prefix + "-labels-idx1-ubyte"), std::move(classes),
      std::string(fashion ? "fashion-mnist" : "mnist") + " " + (train ? "train" : "test") + " (" + dir + ")");
}

}  // namespace apot::data
