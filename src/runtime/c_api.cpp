// The C API (apot/apot.h) over runtime::Model: status codes instead of exceptions, a
// thread-local message, and a registry of live handles that turns most uses of a freed model
// into APOT_ERROR_INVALID_HANDLE instead of a crash.
#include "apot/apot.h"

#include <algorithm>
#include <memory>
#include <mutex>
#include <new>
#include <shared_mutex>
#include <string>
#include <unordered_set>

#include "apot/runtime/model.h"

struct apot_model {
  explicit apot_model(apot::runtime::Model m) : model(std::move(m)) {}
  apot::runtime::Model model;
};

namespace {

using apot::runtime::Model;

thread_local std::string last_error;

// Live handles. A lookup takes the lock shared: calls on live models never wait for each other.
std::shared_mutex registry_mutex;
std::unordered_set<const apot_model*>& registry() {
  static auto* live = new std::unordered_set<const apot_model*>();  // never destroyed: usable at exit
  return *live;
}

apot_status fail(apot_status status, const std::string& message) {
  try {
    last_error = message;
  } catch (...) {  // no memory for the message: keep the status
  }
  return status;
}

// Runs f, turning every exception into a status and the message.
template <typename F>
apot_status guarded(const char* function, F f) {
  try {
    return f();
  } catch (const apot::runtime::FileError& e) {
    return fail(APOT_ERROR_IO, e.what());
  } catch (const apot::runtime::VersionError& e) {
    return fail(APOT_ERROR_VERSION, e.what());
  } catch (const apot::runtime::FormatError& e) {
    return fail(APOT_ERROR_FORMAT, e.what());
  } catch (const std::invalid_argument& e) {
    return fail(APOT_ERROR_INVALID_ARGUMENT, std::string(function) + ": " + e.what());
  } catch (const std::bad_alloc&) {
    return fail(APOT_ERROR_OUT_OF_MEMORY, std::string(function) + ": out of memory");
  } catch (const std::exception& e) {
    return fail(APOT_ERROR_INTERNAL, std::string(function) + ": " + e.what());
  } catch (...) {
    return fail(APOT_ERROR_INTERNAL, std::string(function) + ": unknown error");
  }
}

// The model behind a handle, or a status.
apot_status check_handle(const char* function, const apot_model* model) {
  if (!model) return fail(APOT_ERROR_INVALID_ARGUMENT, std::string(function) + ": model is NULL");
  std::shared_lock<std::shared_mutex> lock(registry_mutex);
  if (!registry().count(model))
    return fail(APOT_ERROR_INVALID_HANDLE, std::string(function) + ": not a live model (freed, or never loaded)");
  return APOT_OK;
}

apot_status null_argument(const char* function, const char* name) {
  return fail(APOT_ERROR_INVALID_ARGUMENT, std::string(function) + ": " + name + " is NULL");
}

apot_status adopt(Model m, apot_model** out) {
  auto handle = std::make_unique<apot_model>(std::move(m));
  {
    std::unique_lock<std::shared_mutex> lock(registry_mutex);
    registry().insert(handle.get());
  }
  *out = handle.release();
  return APOT_OK;
}

apot::runtime::RunOptions run_options(const apot_run_options* o) {
  apot::runtime::RunOptions r;
  if (!o) return r;
  if (o->struct_size < sizeof(apot_run_options))
    throw std::invalid_argument("options->struct_size is too small (call apot_run_options_init first)");
  if (o->threads < 1) throw std::invalid_argument("options->threads must be at least 1");
  if (o->isa < APOT_ISA_AUTO || o->isa > APOT_ISA_AVX512_VNNI) throw std::invalid_argument("options->isa is unknown");
  r.threads = o->threads;
  r.isa = static_cast<apot::runtime::Isa>(o->isa);
  r.pixel_stem = o->pixel_stem != 0;
  return r;
}

// Checks a run's buffers: input_count values for `batch` images and room for their logits.
void check_sizes(const Model& m, size_t input_count, int batch, size_t logits_count) {
  if (batch < 1) throw std::invalid_argument("batch must be at least 1");
  const size_t want_in = m.info().input_size() * size_t(batch), want_out = size_t(m.info().num_classes) * size_t(batch);
  if (input_count != want_in)
    throw std::invalid_argument("input has " + std::to_string(input_count) + " values; a batch of " +
                                std::to_string(batch) + " " + std::to_string(m.info().channels) + "x" +
                                std::to_string(m.info().height) + "x" + std::to_string(m.info().width) +
                                " images needs " + std::to_string(want_in));
  if (logits_count < want_out)
    throw std::invalid_argument("logits has room for " + std::to_string(logits_count) + " values, " +
                                std::to_string(want_out) + " needed");
}

static_assert(int(apot::runtime::Isa::automatic) == APOT_ISA_AUTO &&
                  int(apot::runtime::Isa::scalar) == APOT_ISA_SCALAR &&
                  int(apot::runtime::Isa::avx2) == APOT_ISA_AVX2 &&
                  int(apot::runtime::Isa::avx_vnni) == APOT_ISA_AVX_VNNI &&
                  int(apot::runtime::Isa::avx512_vnni) == APOT_ISA_AVX512_VNNI,
              "apot_isa and runtime::Isa agree");

}  // namespace

extern "C" {

void apot_run_options_init(apot_run_options* options) {
  if (!options) return;
  options->struct_size = sizeof(apot_run_options);
  options->threads = 1;
  options->isa = APOT_ISA_AUTO;
  options->pixel_stem = 1;
}

const char* apot_version(void) { return apot::runtime::version(); }

const char* apot_status_string(apot_status status) {
  switch (status) {
    case APOT_OK: return "ok";
    case APOT_ERROR_INVALID_ARGUMENT: return "invalid argument";
    case APOT_ERROR_IO: return "cannot read the file";
    case APOT_ERROR_FORMAT: return "invalid or unsupported model file";
    case APOT_ERROR_VERSION: return "model file of another format version";
    case APOT_ERROR_OUT_OF_MEMORY: return "out of memory";
    case APOT_ERROR_INVALID_HANDLE: return "invalid model handle";
    case APOT_ERROR_INTERNAL: return "internal error";
  }
  return "unknown status";
}

const char* apot_last_error(void) { return last_error.c_str(); }

apot_status apot_model_load(const char* path, apot_model** model) {
  if (!model) return null_argument(__func__, "model");
  *model = nullptr;
  if (!path) return null_argument(__func__, "path");
  return guarded(__func__, [&] { return adopt(Model::load(path), model); });
}

apot_status apot_model_load_from_memory(const void* data, size_t size, apot_model** model) {
  if (!model) return null_argument(__func__, "model");
  *model = nullptr;
  if (!data) return null_argument(__func__, "data");
  return guarded(__func__, [&] { return adopt(Model::from_memory(data, size, "model in memory"), model); });
}

void apot_model_free(apot_model* model) {
  if (!model) return;
  {
    std::unique_lock<std::shared_mutex> lock(registry_mutex);
    if (registry().erase(model) == 0) return;  // freed already, or never ours
  }
  delete model;
}

apot_status apot_model_input_shape(const apot_model* model, int* channels, int* height, int* width) {
  if (const apot_status s = check_handle(__func__, model)) return s;
  if (!channels || !height || !width) return null_argument(__func__, "an output pointer");
  const apot::runtime::ModelInfo& info = model->model.info();
  *channels = info.channels;
  *height = info.height;
  *width = info.width;
  return APOT_OK;
}

apot_status apot_model_input_normalization(const apot_model* model, float* mean, float* std, size_t count) {
  if (const apot_status s = check_handle(__func__, model)) return s;
  if (!mean || !std) return null_argument(__func__, "mean or std");
  const apot::runtime::ModelInfo& info = model->model.info();
  if (count < info.mean.size())
    return fail(APOT_ERROR_INVALID_ARGUMENT, std::string(__func__) + ": count " + std::to_string(count) +
                                                 " is less than the model's " + std::to_string(info.mean.size()) +
                                                 " channels");
  std::copy(info.mean.begin(), info.mean.end(), mean);
  std::copy(info.std.begin(), info.std.end(), std);
  return APOT_OK;
}

apot_status apot_model_num_classes(const apot_model* model, int* num_classes) {
  if (const apot_status s = check_handle(__func__, model)) return s;
  if (!num_classes) return null_argument(__func__, "num_classes");
  *num_classes = model->model.info().num_classes;
  return APOT_OK;
}

apot_status apot_model_class_name(const apot_model* model, int index, const char** name) {
  if (const apot_status s = check_handle(__func__, model)) return s;
  if (!name) return null_argument(__func__, "name");
  const auto& names = model->model.info().class_names;
  if (index < 0 || size_t(index) >= names.size())
    return fail(APOT_ERROR_INVALID_ARGUMENT, std::string(__func__) + ": class index " + std::to_string(index) +
                                                 " is outside 0.." + std::to_string(names.size() - 1));
  *name = names[size_t(index)].c_str();
  return APOT_OK;
}

apot_status apot_model_metadata(const apot_model* model, const char** json) {
  if (const apot_status s = check_handle(__func__, model)) return s;
  if (!json) return null_argument(__func__, "json");
  *json = model->model.info().metadata_json.c_str();
  return APOT_OK;
}

apot_status apot_model_run(const apot_model* model, const float* input, size_t input_count, int batch, float* logits,
                           size_t logits_count, const apot_run_options* options) {
  if (const apot_status s = check_handle(__func__, model)) return s;
  if (!input) return null_argument(__func__, "input");
  if (!logits) return null_argument(__func__, "logits");
  return guarded(__func__, [&] {
    check_sizes(model->model, input_count, batch, logits_count);
    model->model.run(input, batch, logits, run_options(options));
    return APOT_OK;
  });
}

apot_status apot_model_run_u8(const apot_model* model, const uint8_t* pixels, size_t pixel_count, int batch, int layout,
                              float* logits, size_t logits_count, const apot_run_options* options) {
  if (const apot_status s = check_handle(__func__, model)) return s;
  if (!pixels) return null_argument(__func__, "pixels");
  if (!logits) return null_argument(__func__, "logits");
  if (layout != APOT_LAYOUT_HWC && layout != APOT_LAYOUT_CHW)
    return fail(APOT_ERROR_INVALID_ARGUMENT, std::string(__func__) + ": unknown layout");
  return guarded(__func__, [&] {
    check_sizes(model->model, pixel_count, batch, logits_count);
    model->model.run_pixels(
        pixels, batch, layout == APOT_LAYOUT_HWC ? apot::runtime::PixelLayout::hwc : apot::runtime::PixelLayout::chw,
        logits, run_options(options));
    return APOT_OK;
  });
}

}  // extern "C"
