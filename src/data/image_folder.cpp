// ImageFolder: root/<class>/<image>.jpg|.jpeg|.png, classes sorted by name (as torchvision).
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <filesystem>

#include "apot/data/dataset.h"

namespace apot::data {
namespace {

namespace fs = std::filesystem;

bool is_image_file(const fs::path& p) {
  std::string ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  return ext == ".jpg" || ext == ".jpeg" || ext == ".png";
}

class ImageFolderDataset : public Dataset {
 public:
  ImageFolderDataset(const std::string& root, ImageFolderOptions options) : root_(root), options_(options) {
    if (!fs::is_directory(root)) throw DataError(root + ": directory not found");
    for (const auto& entry : fs::directory_iterator(root))
      if (entry.is_directory()) classes_.push_back(entry.path().filename().string());
    std::sort(classes_.begin(), classes_.end());
    if (classes_.empty()) throw DataError(root + ": no class folders (expected root/<class>/<image>)");
    for (size_t c = 0; c < classes_.size(); ++c) {
      std::vector<std::string> files;
      for (const auto& entry : fs::recursive_directory_iterator(fs::path(root) / classes_[c]))
        if (entry.is_regular_file() && is_image_file(entry.path())) files.push_back(entry.path().string());
      if (files.empty())
        throw DataError((fs::path(root) / classes_[c]).string() + ": class folder holds no .jpg/.jpeg/.png image");
      std::sort(files.begin(), files.end());
      for (std::string& f : files) {
        files_.push_back(std::move(f));
        labels_.push_back(static_cast<int64_t>(c));
      }
    }
  }

  size_t size() const override { return files_.size(); }
  const std::vector<std::string>& class_names() const override { return classes_; }
  int channels() const override { return 0; }
  std::string description() const override {
    return "imagefolder " + root_ + " (" + std::to_string(files_.size()) + " images, " +
           std::to_string(classes_.size()) + " classes)";
  }

  std::string example_name(size_t index) const override { return files_.at(index); }

  Example get(size_t index) const override {
    for (size_t attempt = 0; attempt < files_.size(); ++attempt) {
      const size_t i = (index + attempt) % files_.size();
      try {
        const std::vector<uint8_t> bytes = read_file(files_[i]);
        return Example{decode_image(bytes.data(), bytes.size(), files_[i], options_.decode_min_side), labels_[i]};
      } catch (const DataError& e) {
        if (!options_.skip_corrupt)
          throw DataError(std::string(e.what()) + " (set data.skip_corrupt=true to skip such files)");
        std::fprintf(stderr, "apot: warning: skipping %s\n", e.what());
      }
    }
    throw DataError(root_ + ": no readable image");
  }

 private:
  std::string root_;
  ImageFolderOptions options_;
  std::vector<std::string> classes_;
  std::vector<std::string> files_;
  std::vector<int64_t> labels_;
};

}  // namespace

std::shared_ptr<Dataset> load_image_folder(const std::string& root, ImageFolderOptions options) {
  return std::make_shared<ImageFolderDataset>(root, options);
}

}  // namespace apot::data
