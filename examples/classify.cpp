// Classifies JPEG images with an .apot model through apot's C++ API (apot/runtime/model.h), in
// batches, on several threads.
//
//   classify_cpp [--threads N] MODEL.apot IMAGE.jpg [IMAGE.jpg ...]
//
// prints "IMAGE<TAB>CLASS<TAB>PROBABILITY" for each image. Each image must have the model's
// input size; JPEG decoding is libjpeg-turbo's, as in apot's own data pipeline, so the classes
// are those `apot run` gives.
#include <apot/runtime/model.h>
#include <turbojpeg.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

// Appends the image at `path` to `pixels` (height x width x channels bytes).
void decode(tjhandle tj, const std::string& path, const apot::runtime::ModelInfo& info, std::vector<uint8_t>& pixels) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path + ": cannot read");
  std::vector<unsigned char> jpeg((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  int w = 0, h = 0, subsampling = 0, colorspace = 0;
  if (tjDecompressHeader3(tj, jpeg.data(), jpeg.size(), &w, &h, &subsampling, &colorspace) != 0)
    throw std::runtime_error(path + ": " + tjGetErrorStr2(tj));
  if (w != info.width || h != info.height)
    throw std::runtime_error(path + ": " + std::to_string(w) + "x" + std::to_string(h) + ", the model takes " +
                             std::to_string(info.width) + "x" + std::to_string(info.height) + " images");
  const size_t at = pixels.size();
  pixels.resize(at + info.input_size());
  if (tjDecompress2(tj, jpeg.data(), jpeg.size(), pixels.data() + at, w, 0, h,
                    info.channels == 1 ? TJPF_GRAY : TJPF_RGB, TJFLAG_ACCURATEDCT) != 0)
    throw std::runtime_error(path + ": " + tjGetErrorStr2(tj));
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  apot::runtime::RunOptions options;
  if (args.size() >= 2 && args[0] == "--threads") {
    options.threads = std::stoi(args[1]);
    args.erase(args.begin(), args.begin() + 2);
  }
  if (args.size() < 2) {
    std::fprintf(stderr, "usage: %s [--threads N] MODEL.apot IMAGE.jpg [IMAGE.jpg ...]\n", argv[0]);
    return 2;
  }
  try {
    const apot::runtime::Model model = apot::runtime::Model::load(args[0]);
    const apot::runtime::ModelInfo& info = model.info();
    if (info.channels != 1 && info.channels != 3)
      throw std::runtime_error("the model takes " + std::to_string(info.channels) + "-channel images");
    tjhandle tj = tjInitDecompress();
    const size_t batch_size = 64;
    for (size_t first = 1; first < args.size(); first += batch_size) {
      const size_t count = std::min(batch_size, args.size() - first);
      std::vector<uint8_t> pixels;
      for (size_t i = 0; i < count; ++i) decode(tj, args[first + i], info, pixels);
      const std::vector<float> logits =
          model.run_pixels(pixels.data(), int(count), apot::runtime::PixelLayout::hwc, options);
      for (size_t i = 0; i < count; ++i) {
        const float* l = logits.data() + i * size_t(info.num_classes);
        const size_t best = size_t(std::max_element(l, l + info.num_classes) - l);
        double total = 0;
        for (int k = 0; k < info.num_classes; ++k) total += std::exp(double(l[k]) - l[best]);
        std::printf("%s\t%s\t%.4f\n", args[first + i].c_str(), info.class_names[best].c_str(), 1.0 / total);
      }
    }
    tjDestroy(tj);
  } catch (const std::exception& e) {  // apot::runtime::FormatError, std::invalid_argument, ...
    std::fprintf(stderr, "classify: %s\n", e.what());
    return 1;
  }
  return 0;
}
