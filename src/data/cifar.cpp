// CIFAR-10 / CIFAR-100 binary batches.
#include <filesystem>

#include "apot/data/dataset.h"

namespace apot::data {
namespace {

constexpr size_t kImageBytes = 32 * 32 * 3;

std::vector<std::string> cifar10_classes() {
  return {"airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"};
}

std::string resolve_dir(const std::string& dir, const char* sub) {
  if (!std::filesystem::is_directory(dir)) throw DataError(dir + ": directory not found");
  const std::string nested = dir + "/" + sub;
  return std::filesystem::is_directory(nested) ? nested : dir;
}

}  // namespace

void parse_cifar_records(const uint8_t* bytes, size_t size, bool cifar100, const std::string& name,
                         std::vector<uint8_t>& pixels_hwc, std::vector<int64_t>& labels) {
  const size_t label_bytes = cifar100 ? 2 : 1, record = label_bytes + kImageBytes;
  if (size == 0) throw DataError(name + ": empty file");
  if (size % record != 0)
    throw DataError(name + ": size " + std::to_string(size) + " is not a multiple of the " + std::to_string(record) +
                    "-byte CIFAR record (truncated or not a CIFAR" + (cifar100 ? "-100" : "-10") + " batch)");
  const size_t classes = cifar100 ? 100 : 10;
  const size_t count = size / record;
  pixels_hwc.reserve(pixels_hwc.size() + count * kImageBytes);
  for (size_t r = 0; r < count; ++r) {
    const uint8_t* rec = bytes + r * record;
    const uint8_t label = rec[label_bytes - 1];  // CIFAR-100: fine label
    if (label >= classes)
      throw DataError(name + ": label " + std::to_string(label) + " of record " + std::to_string(r) +
                      " is out of range (" + std::to_string(classes) + " classes)");
    labels.push_back(label);
    const uint8_t* planes = rec + label_bytes;
    for (size_t p = 0; p < 1024; ++p)
      for (size_t c = 0; c < 3; ++c) pixels_hwc.push_back(planes[c * 1024 + p]);
  }
}

std::shared_ptr<InMemoryDataset> load_cifar(const std::string& dir, bool train, bool cifar100) {
  const std::string root = resolve_dir(dir, cifar100 ? "cifar-100-binary" : "cifar-10-batches-bin");
  std::vector<std::string> files;
  if (cifar100) {
    files = {train ? "train.bin" : "test.bin"};
  } else if (train) {
    for (int i = 1; i <= 5; ++i) files.push_back("data_batch_" + std::to_string(i) + ".bin");
  } else {
    files = {"test_batch.bin"};
  }
  std::vector<uint8_t> pixels;
  std::vector<int64_t> labels;
  for (const std::string& f : files) {
    const std::string path = root + "/" + f;
    if (!std::filesystem::exists(path)) throw DataError(path + ": file not found");
    const std::vector<uint8_t> bytes = read_file(path);
    parse_cifar_records(bytes.data(), bytes.size(), cifar100, path, pixels, labels);
  }
  std::vector<std::string> classes;
  if (cifar100)
    for (int c = 0; c < 100; ++c) classes.push_back("class" + std::to_string(c));
  else classes = cifar10_classes();
  return std::make_shared<InMemoryDataset>(
      std::string(cifar100 ? "cifar100 " : "cifar10 ") + (train ? "train" : "test") + " (" + root + ")", 32, 32, 3,
      std::move(pixels), std::move(labels), std::move(classes));
}

}  // namespace apot::data
