// apot's integer inference engine, C++ API: load an .apot file, run it on images.
//
// This header is installed (docs/EMBEDDING.md); it uses only the standard library. The C API is
// apot/apot.h. Both come from the same library: libapot_runtime (CMake `apot::runtime`,
// pkg-config `apot-runtime`), which needs no LibTorch.
//
//   apot::runtime::Model model = apot::runtime::Model::load("resnet20-w4.apot");
//   std::vector<float> logits = model.run(images, batch);   // batch x C x H x W floats
//
// Errors are exceptions: FormatError for a file that cannot be used (FileError: missing or
// unreadable; VersionError: another format version; else corrupt or with layers this engine
// does not run), std::invalid_argument for bad arguments to run
// (a negative batch, a NaN or infinite input value, an unknown ISA name).
//
// Thread safety: a loaded Model is immutable. run() and run_pixels() may be called on the same
// Model from any number of threads at once; moving or destroying a Model while another thread
// runs it is undefined.
//
// Memory: the working memory of one image (sized for the model) is kept in a pool inside the
// Model and reused. After the first call, the run() and run_pixels() overloads that write into
// a caller's buffer allocate nothing, as long as no more threads run the Model at once than
// before (each concurrent image needs its own working memory; the pool grows to the largest
// number seen and keeps it). The overloads that return a std::vector allocate that vector.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace apot::runtime {

// The library's version, "MAJOR.MINOR.PATCH".
const char* version();

// A file that cannot be read or run: missing, truncated, corrupt (checksums), written by another
// version of the format, or holding layers this engine does not run. The message is one line
// that starts with the file's name.
class FormatError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};
// The file cannot be opened or read.
class FileError : public FormatError {
 public:
  using FormatError::FormatError;
};
// An .apot file of a format version this library does not read (a re-export with this apot
// version's `apot export` makes one it reads).
class VersionError : public FormatError {
 public:
  using FormatError::FormatError;
};

// The instruction set the engine's kernels use. `automatic` takes the APOT_GEMM_ISA environment
// variable if set, else the best one this CPU has. All of them compute the same results (the
// integer kernels bit for bit); they differ in speed.
enum class Isa { automatic, scalar, avx2, avx_vnni, avx512_vnni };
const char* to_string(Isa isa);          // "auto", "scalar", "avx2", "avx-vnni", "avx512-vnni"
Isa parse_isa(const std::string& name);  // the inverse; std::invalid_argument if unknown
std::vector<Isa> supported_isas();       // on this CPU (scalar first)

struct ModelInfo {
  // The input of one image: channels x height x width floats, normalised as in training:
  // (pixel / 255 - mean[c]) / std[c].
  int channels = 0, height = 0, width = 0;
  std::vector<float> mean, std;
  // The output of one image: num_classes logits.
  int num_classes = 0;
  std::vector<std::string> class_names;  // num_classes names (may be "0", "1", ... if unknown)
  std::string metadata_json;             // everything the exporter recorded (docs/FORMAT.md)
  size_t input_size() const { return size_t(channels) * size_t(height) * size_t(width); }
};

struct RunOptions {
  // Threads for one call (OpenMP): a batch of several images runs one image per thread, a
  // single image splits each layer's output rows (with tuning, not the layers, or the whole
  // image, that the load measured faster on one thread: docs/KERNELS.md, "Tuning").
  int threads = 1;
  Isa isa = Isa::automatic;
  // On the VNNI paths, an image made of 8-bit pixels runs its first layer with integer sums on
  // the pixels; false here runs it in float. Both compute the trained model's first layer and
  // differ in rounding only.
  bool pixel_stem = true;
};

// How 8-bit images are laid out in memory for run_pixels: interleaved (height x width x
// channels, as image decoders give them) or planar (channels x height x width).
enum class PixelLayout { hwc, chw };

class Model {
 public:
  // `path`, or `size` bytes at `data` (copied; the caller may free them after the call); `name`
  // names the model in error messages.
  static Model load(const std::string& path);
  static Model from_memory(const void* data, size_t size, const std::string& name = "model");
  static Model from_bytes(const std::vector<uint8_t>& bytes, const std::string& name = "model");

  Model(Model&&) noexcept;
  Model& operator=(Model&&) noexcept;
  ~Model();

  const ModelInfo& info() const;

  // input: batch x channels x height x width floats (normalised, ModelInfo). Writes batch x
  // num_classes logits to `logits`.
  void run(const float* input, int batch, float* logits, const RunOptions& options = {}) const;
  std::vector<float> run(const float* input, int batch, const RunOptions& options = {}) const;

  // The same on 8-bit images, normalised here with the model's mean and std exactly as apot's
  // data pipeline does (so the results are those of `apot run` on the same pixels).
  void run_pixels(const uint8_t* pixels, int batch, PixelLayout layout, float* logits,
                  const RunOptions& options = {}) const;
  std::vector<float> run_pixels(const uint8_t* pixels, int batch, PixelLayout layout = PixelLayout::hwc,
                                const RunOptions& options = {}) const;

 private:
  struct Impl;
  explicit Model(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
  friend class Inspector;
};

}  // namespace apot::runtime
