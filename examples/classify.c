/* Classifies JPEG images with an .apot model through apot's C API (apot/apot.h).
 *
 *   classify_c MODEL.apot IMAGE.jpg [IMAGE.jpg ...]
 *
 * prints "IMAGE<TAB>CLASS<TAB>PROBABILITY" for each image. Each image must have the model's
 * input size (for example 32x32 for a CIFAR-10 model); JPEG decoding is libjpeg-turbo's, as in
 * apot's own data pipeline, so the classes are those `apot run` gives. */
#include <apot/apot.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <turbojpeg.h>

/* The whole file at `path` (free it), or NULL. */
static unsigned char* read_file(const char* path, unsigned long* size) {
  FILE* f = fopen(path, "rb");
  unsigned char* bytes = NULL;
  long n;
  if (!f) return NULL;
  if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) > 0 && fseek(f, 0, SEEK_SET) == 0) {
    bytes = malloc((size_t)n);
    if (bytes && fread(bytes, 1, (size_t)n, f) != (size_t)n) {
      free(bytes);
      bytes = NULL;
    }
    *size = (unsigned long)n;
  }
  fclose(f);
  return bytes;
}

/* Decodes `path` into height x width x channels (interleaved) 8-bit pixels. */
static int decode(tjhandle tj, const char* path, int channels, int height, int width, unsigned char* pixels) {
  unsigned long size = 0;
  int w, h, subsampling, colorspace, ok;
  unsigned char* jpeg = read_file(path, &size);
  if (!jpeg) {
    fprintf(stderr, "classify: %s: cannot read\n", path);
    return -1;
  }
  ok = tjDecompressHeader3(tj, jpeg, size, &w, &h, &subsampling, &colorspace) == 0;
  if (ok && (w != width || h != height)) {
    fprintf(stderr, "classify: %s: %dx%d, the model takes %dx%d images\n", path, w, h, width, height);
    free(jpeg);
    return -1;
  }
  ok = ok && tjDecompress2(tj, jpeg, size, pixels, width, 0, height, channels == 1 ? TJPF_GRAY : TJPF_RGB,
                           TJFLAG_ACCURATEDCT) == 0;
  free(jpeg);
  if (!ok) fprintf(stderr, "classify: %s: %s\n", path, tjGetErrorStr2(tj));
  return ok ? 0 : -1;
}

int main(int argc, char** argv) {
  apot_model* model = NULL;
  int channels, height, width, classes, i, failed = 0;
  unsigned char* pixels;
  float* logits;
  tjhandle tj;
  if (argc < 3) {
    fprintf(stderr, "usage: %s MODEL.apot IMAGE.jpg [IMAGE.jpg ...]\n", argv[0]);
    return 2;
  }
  if (apot_model_load(argv[1], &model) != APOT_OK) {
    fprintf(stderr, "classify: %s\n", apot_last_error());
    return 1;
  }
  apot_model_input_shape(model, &channels, &height, &width);
  apot_model_num_classes(model, &classes);
  if (channels != 1 && channels != 3) {
    fprintf(stderr, "classify: the model takes %d-channel images; this example decodes grey or RGB JPEGs\n", channels);
    apot_model_free(model);
    return 1;
  }
  pixels = malloc((size_t)channels * height * width);
  logits = malloc(sizeof(float) * (size_t)classes);
  tj = tjInitDecompress();
  for (i = 2; i < argc; ++i) {
    int best = 0, k;
    double total = 0;
    const char* name = NULL;
    if (decode(tj, argv[i], channels, height, width, pixels) != 0) {
      failed = 1;
      continue;
    }
    if (apot_model_run_u8(model, pixels, (size_t)channels * height * width, 1, APOT_LAYOUT_HWC, logits, (size_t)classes,
                          NULL) != APOT_OK) {
      fprintf(stderr, "classify: %s: %s\n", argv[i], apot_last_error());
      failed = 1;
      continue;
    }
    for (k = 1; k < classes; ++k)
      if (logits[k] > logits[best]) best = k;
    for (k = 0; k < classes; ++k) total += exp((double)logits[k] - logits[best]);
    apot_model_class_name(model, best, &name);
    printf("%s\t%s\t%.4f\n", argv[i], name, 1.0 / total);
  }
  tjDestroy(tj);
  free(logits);
  free(pixels);
  apot_model_free(model);
  return failed;
}
