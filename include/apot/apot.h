/* apot's integer inference engine, C API (C99 and later; usable from C++ and through any C FFI).
 *
 *   apot_model* model = NULL;
 *   if (apot_model_load("resnet20-w4.apot", &model) != APOT_OK) {
 *     fprintf(stderr, "%s\n", apot_last_error());
 *     return 1;
 *   }
 *   apot_model_run_u8(model, pixels, pixel_count, 1, APOT_LAYOUT_HWC, logits, logits_count, NULL);
 *   apot_model_free(model);
 *
 * Library: libapot_runtime (CMake: find_package(apot) and apot::runtime; pkg-config:
 * apot-runtime). No LibTorch. docs/EMBEDDING.md has a complete example.
 *
 * Errors: every function that can fail returns an apot_status; APOT_OK is 0. On failure,
 * apot_last_error() gives a one-line message for the calling thread (kept until the next
 * failure in that thread; successful calls leave it as it is). No C++ exception leaves this API,
 * and no function aborts on bad input.
 *
 * Threads: a loaded model is immutable. apot_model_run and apot_model_run_u8 may be called on
 * the same model from any number of threads at once, as may every query. apot_model_free must
 * not race with any other call on the same model. The library uses OpenMP (libgomp) inside a
 * call when options->threads > 1.
 *
 * Memory: each model keeps a pool of working memory (one per image running at once). After the
 * first call, apot_model_run and apot_model_run_u8 allocate nothing as long as no more images
 * run at once than before (with threads > 1 and batch > 1, up to `threads` images run at once).
 * Outputs go to the caller's buffers. Strings returned by the queries belong to the model and
 * live until apot_model_free.
 *
 * Handles: passing a pointer that no load returned, or a model that was freed, is undefined
 * behaviour. The library keeps a registry of live models and returns
 * APOT_ERROR_INVALID_HANDLE for a freed model (and ignores a second apot_model_free) as long as
 * no new model has been given the same address since; it cannot detect that case.
 */
#ifndef APOT_APOT_H
#define APOT_APOT_H

#include <stddef.h>
#include <stdint.h>

#if defined(_WIN32)
#define APOT_API
#else
#define APOT_API __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

typedef struct apot_model apot_model;

typedef enum apot_status {
  APOT_OK = 0,
  APOT_ERROR_INVALID_ARGUMENT = 1, /* a null pointer, a wrong buffer size, a NaN input value, a bad option */
  APOT_ERROR_IO = 2,               /* the file cannot be opened or read */
  APOT_ERROR_FORMAT = 3,           /* not an .apot file, corrupt, or layers this engine does not run */
  APOT_ERROR_VERSION = 4,          /* an .apot file of another format version: export it again */
  APOT_ERROR_OUT_OF_MEMORY = 5,
  APOT_ERROR_INVALID_HANDLE = 6, /* a model that was freed (see "Handles" above) */
  APOT_ERROR_INTERNAL = 7        /* a bug in apot: please report it with the message */
} apot_status;

/* How 8-bit images lie in memory: interleaved height x width x channels (as image decoders
 * give them) or planar channels x height x width. */
typedef enum apot_layout { APOT_LAYOUT_HWC = 0, APOT_LAYOUT_CHW = 1 } apot_layout;

/* The kernels' instruction set. AUTO: the APOT_GEMM_ISA environment variable if set, else the
 * best this CPU has. All give the same results; a set the CPU lacks is APOT_ERROR_INVALID_ARGUMENT. */
typedef enum apot_isa {
  APOT_ISA_AUTO = 0,
  APOT_ISA_SCALAR = 1,
  APOT_ISA_AVX2 = 2,
  APOT_ISA_AVX_VNNI = 3,
  APOT_ISA_AVX512_VNNI = 4
} apot_isa;

typedef struct apot_run_options {
  size_t struct_size; /* sizeof(apot_run_options), set by apot_run_options_init */
  int threads;        /* threads for one call (default 1) */
  int isa;            /* an apot_isa (default APOT_ISA_AUTO) */
  int pixel_stem;     /* 1 (default): on VNNI paths, 8-bit images run the first layer on integers */
} apot_run_options;

/* Defaults; NULL options in a run call mean these. */
APOT_API void apot_run_options_init(apot_run_options* options);

APOT_API const char* apot_version(void);                     /* "MAJOR.MINOR.PATCH" */
APOT_API const char* apot_status_string(apot_status status); /* "invalid argument", ... */
APOT_API const char* apot_last_error(void);                  /* this thread's last message, or "" */

/* Loading. *model is set on success and left NULL otherwise. from_memory copies what it needs:
 * the caller may free `data` when it returns. */
APOT_API apot_status apot_model_load(const char* path, apot_model** model);
APOT_API apot_status apot_model_load_from_memory(const void* data, size_t size, apot_model** model);
/* NULL is ignored. */
APOT_API void apot_model_free(apot_model* model);

/* Inputs: one image is channels x height x width. Floats are normalised as in training,
 * (pixel / 255 - mean[c]) / std[c]; apot_model_input_normalization copies `channels` values
 * to each of mean and std (`count` must be at least channels). */
APOT_API apot_status apot_model_input_shape(const apot_model* model, int* channels, int* height, int* width);
APOT_API apot_status apot_model_input_normalization(const apot_model* model, float* mean, float* std, size_t count);
/* Outputs: num_classes logits per image, and the class names the model was trained with. */
APOT_API apot_status apot_model_num_classes(const apot_model* model, int* num_classes);
APOT_API apot_status apot_model_class_name(const apot_model* model, int index, const char** name);
/* Everything the exporter recorded, as one JSON object (docs/FORMAT.md). */
APOT_API apot_status apot_model_metadata(const apot_model* model, const char** json);

/* Runs `batch` images. input_count must be batch x channels x height x width, and logits_count
 * at least batch x num_classes; logits are written image by image. options may be NULL. */
APOT_API apot_status apot_model_run(const apot_model* model, const float* input, size_t input_count, int batch,
                                    float* logits, size_t logits_count, const apot_run_options* options);
/* The same on 8-bit images (layout: an apot_layout), normalised inside with the model's mean and
 * std exactly as apot's data pipeline does: the same logits as `apot run` gives for the same
 * pixels. */
APOT_API apot_status apot_model_run_u8(const apot_model* model, const uint8_t* pixels, size_t pixel_count, int batch,
                                       int layout, float* logits, size_t logits_count, const apot_run_options* options);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* APOT_APOT_H */
