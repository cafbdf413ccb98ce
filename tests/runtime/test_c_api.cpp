// The C API (apot/apot.h) on a real export (tests/fixtures/apot/small-cnn.apot, the small
// Fashion-MNIST CNN of docs/RESULTS.md): the same logits as the C++ API, every error path with
// its status and message, handles used after free, and no allocation in the hot path. Runs under
// AddressSanitizer and UBSan in the sanitizer build.
#include "apot/apot.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <limits>
#include <new>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "apot/runtime/model.h"

// Counts operator new calls while `counting` is set (the test's own thread or the library's).
namespace {
std::atomic<bool> counting{false};
std::atomic<long> allocations{0};
}  // namespace

// (GCC 12 takes free() in these replacements for a mismatch with the operator new above.)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
void* operator new(std::size_t n) {
  if (counting.load(std::memory_order_relaxed)) allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n) { return operator new(n); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
#pragma GCC diagnostic pop

namespace {

const std::string kFixture = std::string(APOT_SOURCE_DIR) + "/tests/fixtures/apot/small-cnn.apot";

std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

struct Loaded {
  apot_model* model = nullptr;
  int channels = 0, height = 0, width = 0, classes = 0;
  size_t image() const { return size_t(channels) * height * width; }
};

// Throws (failing the test at once) if the fixture does not load.
Loaded load_fixture() {
  Loaded l;
  if (apot_model_load(kFixture.c_str(), &l.model) != APOT_OK)
    throw std::runtime_error(std::string("fixture: ") + apot_last_error());
  EXPECT_EQ(apot_model_input_shape(l.model, &l.channels, &l.height, &l.width), APOT_OK);
  EXPECT_EQ(apot_model_num_classes(l.model, &l.classes), APOT_OK);
  return l;
}

std::vector<uint8_t> random_pixels(size_t count, unsigned seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> p(count);
  for (uint8_t& v : p) v = uint8_t(rng() % 256);
  return p;
}

TEST(CApi, QueriesDescribeTheModel) {
  Loaded l = load_fixture();
  ASSERT_NE(l.model, nullptr);
  EXPECT_EQ(l.channels, 1);
  EXPECT_EQ(l.height, 28);
  EXPECT_EQ(l.width, 28);
  EXPECT_EQ(l.classes, 10);
  const char* name = nullptr;
  ASSERT_EQ(apot_model_class_name(l.model, 0, &name), APOT_OK);
  EXPECT_STREQ(name, "t-shirt/top");
  ASSERT_EQ(apot_model_class_name(l.model, 9, &name), APOT_OK);
  EXPECT_STREQ(name, "ankle boot");
  EXPECT_EQ(apot_model_class_name(l.model, 10, &name), APOT_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(apot_last_error()).find("class index 10"), std::string::npos) << apot_last_error();
  EXPECT_EQ(apot_model_class_name(l.model, -1, &name), APOT_ERROR_INVALID_ARGUMENT);
  const char* json = nullptr;
  ASSERT_EQ(apot_model_metadata(l.model, &json), APOT_OK);
  EXPECT_NE(std::string(json).find("\"graph\""), std::string::npos);
  float mean[4] = {}, stdev[4] = {};
  ASSERT_EQ(apot_model_input_normalization(l.model, mean, stdev, 4), APOT_OK);
  EXPECT_GT(stdev[0], 0.0f);
  EXPECT_EQ(apot_model_input_normalization(l.model, mean, stdev, 0), APOT_ERROR_INVALID_ARGUMENT);
  EXPECT_STREQ(apot_version(), apot::runtime::version());
  EXPECT_STREQ(apot_status_string(APOT_ERROR_VERSION), "model file of another format version");
  apot_model_free(l.model);
}

// The same logits as the C++ API, on floats and on 8-bit images (both layouts), on every path
// the CPU has, for 1 and 2 threads.
TEST(CApi, RunsGiveTheCppApisLogits) {
  Loaded l = load_fixture();
  const auto cpp = apot::runtime::Model::load(kFixture);
  const int batch = 3;
  const std::vector<uint8_t> pixels = random_pixels(batch * l.image(), 1);
  std::vector<float> input(pixels.size());
  const auto& info = cpp.info();
  for (size_t i = 0; i < input.size(); ++i) input[i] = (pixels[i] / 255.0f - info.mean[0]) * (1.0f / info.std[0]);
  for (apot::runtime::Isa isa : apot::runtime::supported_isas())
    for (int threads : {1, 2}) {
      SCOPED_TRACE(std::string(apot::runtime::to_string(isa)) + ", " + std::to_string(threads) + " threads");
      apot::runtime::RunOptions ro;
      ro.isa = isa;
      ro.threads = threads;
      apot_run_options co;
      apot_run_options_init(&co);
      co.isa = int(isa);
      co.threads = threads;
      const std::vector<float> want = cpp.run(input.data(), batch, ro);
      std::vector<float> got(want.size() + 1, -7.0f);  // one more: must stay untouched
      ASSERT_EQ(apot_model_run(l.model, input.data(), input.size(), batch, got.data(), got.size(), &co), APOT_OK)
          << apot_last_error();
      EXPECT_EQ(std::vector<float>(got.begin(), got.end() - 1), want);
      EXPECT_EQ(got.back(), -7.0f);
      std::vector<float> from_pixels(want.size());
      ASSERT_EQ(apot_model_run_u8(l.model, pixels.data(), pixels.size(), batch, APOT_LAYOUT_CHW, from_pixels.data(),
                                  from_pixels.size(), &co),
                APOT_OK)
          << apot_last_error();
      EXPECT_EQ(from_pixels, want);
      // One channel: interleaved and planar are the same bytes.
      ASSERT_EQ(apot_model_run_u8(l.model, pixels.data(), pixels.size(), batch, APOT_LAYOUT_HWC, from_pixels.data(),
                                  from_pixels.size(), &co),
                APOT_OK);
      EXPECT_EQ(from_pixels, want);
    }
  std::vector<float> defaults(size_t(batch) * l.classes);
  ASSERT_EQ(apot_model_run(l.model, input.data(), input.size(), batch, defaults.data(), defaults.size(), nullptr),
            APOT_OK);
  EXPECT_EQ(defaults, cpp.run(input.data(), batch));
  apot_model_free(l.model);
}

TEST(CApi, LoadErrorsHaveTheirStatusAndOneLine) {
  apot_model* m = reinterpret_cast<apot_model*>(0x1);
  EXPECT_EQ(apot_model_load("/nonexistent/model.apot", &m), APOT_ERROR_IO);
  EXPECT_EQ(m, nullptr);
  EXPECT_NE(std::string(apot_last_error()).find("/nonexistent/model.apot: cannot open"), std::string::npos);
  EXPECT_EQ(apot_model_load(nullptr, &m), APOT_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(apot_model_load(kFixture.c_str(), nullptr), APOT_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(apot_model_load_from_memory(nullptr, 10, &m), APOT_ERROR_INVALID_ARGUMENT);

  std::vector<uint8_t> bytes = read_bytes(kFixture);
  ASSERT_GT(bytes.size(), 64u);
  ASSERT_EQ(apot_model_load_from_memory(bytes.data(), bytes.size(), &m), APOT_OK);
  apot_model_free(m);
  // Another format version (the 4 bytes after the 8-byte magic): its own status.
  std::vector<uint8_t> other = bytes;
  other[8] = 4;
  EXPECT_EQ(apot_model_load_from_memory(other.data(), other.size(), &m), APOT_ERROR_VERSION);
  EXPECT_NE(std::string(apot_last_error()).find(".apot version 4 is not supported"), std::string::npos)
      << apot_last_error();
  other[8] = 1;
  EXPECT_EQ(apot_model_load_from_memory(other.data(), other.size(), &m), APOT_ERROR_VERSION);
  EXPECT_NE(std::string(apot_last_error()).find("export it again"), std::string::npos) << apot_last_error();
  // Truncated, flipped bits, not an .apot file at all.
  EXPECT_EQ(apot_model_load_from_memory(bytes.data(), bytes.size() / 2, &m), APOT_ERROR_FORMAT);
  EXPECT_NE(std::string(apot_last_error()).find("truncated"), std::string::npos) << apot_last_error();
  std::vector<uint8_t> flipped = bytes;
  flipped[bytes.size() / 2] ^= 0x10;
  EXPECT_EQ(apot_model_load_from_memory(flipped.data(), flipped.size(), &m), APOT_ERROR_FORMAT);
  const char text[] = "hello";
  EXPECT_EQ(apot_model_load_from_memory(text, sizeof text, &m), APOT_ERROR_FORMAT);
  EXPECT_EQ(m, nullptr);
  EXPECT_EQ(std::string(apot_last_error()).find('\n'), std::string::npos);
}

TEST(CApi, RunErrorsHaveTheirStatus) {
  Loaded l = load_fixture();
  const size_t image = l.image();
  std::vector<float> input(2 * image, 0.1f), logits(2 * size_t(l.classes));
  auto run = [&](const float* in, size_t count, int batch, float* out, size_t out_count,
                 const apot_run_options* o = nullptr) {
    return apot_model_run(l.model, in, count, batch, out, out_count, o);
  };
  EXPECT_EQ(run(input.data(), 2 * image, 2, logits.data(), logits.size()), APOT_OK);
  EXPECT_EQ(apot_model_run(nullptr, input.data(), image, 1, logits.data(), logits.size(), nullptr),
            APOT_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(apot_last_error()).find("model is NULL"), std::string::npos);
  EXPECT_EQ(run(nullptr, image, 1, logits.data(), logits.size()), APOT_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(run(input.data(), image, 1, nullptr, logits.size()), APOT_ERROR_INVALID_ARGUMENT);
  // Wrong sizes: the message says what was expected.
  EXPECT_EQ(run(input.data(), image - 1, 1, logits.data(), logits.size()), APOT_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(apot_last_error()).find("a batch of 1 1x28x28 images needs 784"), std::string::npos)
      << apot_last_error();
  EXPECT_EQ(run(input.data(), 2 * image, 1, logits.data(), logits.size()), APOT_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(run(input.data(), 2 * image, 2, logits.data(), size_t(l.classes)), APOT_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(apot_last_error()).find("room for 10 values, 20 needed"), std::string::npos)
      << apot_last_error();
  EXPECT_EQ(run(input.data(), 0, 0, logits.data(), logits.size()), APOT_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(run(input.data(), image, -1, logits.data(), logits.size()), APOT_ERROR_INVALID_ARGUMENT);
  // NaN and infinite input.
  input[image + 17] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_EQ(run(input.data(), 2 * image, 2, logits.data(), logits.size()), APOT_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(apot_last_error()).find("NaN or infinite value (image 1)"), std::string::npos)
      << apot_last_error();
  EXPECT_EQ(run(input.data(), image, 1, logits.data(), logits.size()), APOT_OK);  // the NaN is in image 1
  // Options.
  apot_run_options o;
  apot_run_options_init(&o);
  o.threads = 0;
  EXPECT_EQ(run(input.data(), image, 1, logits.data(), logits.size(), &o), APOT_ERROR_INVALID_ARGUMENT);
  apot_run_options_init(&o);
  o.isa = 99;
  EXPECT_EQ(run(input.data(), image, 1, logits.data(), logits.size(), &o), APOT_ERROR_INVALID_ARGUMENT);
  apot_run_options_init(&o);
  o.struct_size = 4;
  EXPECT_EQ(run(input.data(), image, 1, logits.data(), logits.size(), &o), APOT_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(apot_last_error()).find("apot_run_options_init"), std::string::npos);
  const auto supported = apot::runtime::supported_isas();
  for (int isa = APOT_ISA_SCALAR; isa <= APOT_ISA_AVX512_VNNI; ++isa) {
    apot_run_options_init(&o);
    o.isa = isa;
    const bool have = std::find(supported.begin(), supported.end(), apot::runtime::Isa(isa)) != supported.end();
    EXPECT_EQ(run(input.data(), image, 1, logits.data(), logits.size(), &o),
              have ? APOT_OK : APOT_ERROR_INVALID_ARGUMENT)
        << isa;
  }
  // 8-bit images: sizes and layouts.
  std::vector<uint8_t> pixels(image, 200);
  EXPECT_EQ(apot_model_run_u8(l.model, pixels.data(), image, 1, APOT_LAYOUT_HWC, logits.data(), logits.size(), nullptr),
            APOT_OK);
  EXPECT_EQ(apot_model_run_u8(l.model, pixels.data(), image, 2, APOT_LAYOUT_HWC, logits.data(), logits.size(), nullptr),
            APOT_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(apot_model_run_u8(l.model, pixels.data(), image, 1, 7, logits.data(), logits.size(), nullptr),
            APOT_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(apot_model_run_u8(l.model, nullptr, image, 1, APOT_LAYOUT_HWC, logits.data(), logits.size(), nullptr),
            APOT_ERROR_INVALID_ARGUMENT);
  int c = 0, h = 0, w = 0;
  EXPECT_EQ(apot_model_input_shape(l.model, &c, nullptr, &w), APOT_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(apot_model_input_shape(nullptr, &c, &h, &w), APOT_ERROR_INVALID_ARGUMENT);
  apot_model_free(l.model);
}

// Freed handles: detected while their address is not reused; a second free is ignored.
TEST(CApi, FreedHandlesAreRefused) {
  Loaded l = load_fixture();
  apot_model* stale = l.model;
  apot_model_free(stale);
  int classes = 0;
  EXPECT_EQ(apot_model_num_classes(stale, &classes), APOT_ERROR_INVALID_HANDLE);
  EXPECT_NE(std::string(apot_last_error()).find("not a live model"), std::string::npos);
  std::vector<float> input(l.image()), logits(size_t(l.classes));
  EXPECT_EQ(apot_model_run(stale, input.data(), input.size(), 1, logits.data(), logits.size(), nullptr),
            APOT_ERROR_INVALID_HANDLE);
  apot_model_free(stale);  // ignored
  apot_model_free(nullptr);
  apot_model* never = reinterpret_cast<apot_model*>(&classes);
  EXPECT_EQ(apot_model_num_classes(never, &classes), APOT_ERROR_INVALID_HANDLE);
  apot_model_free(never);  // not ours: ignored
}

// The error message is per thread.
TEST(CApi, LastErrorIsPerThread) {
  apot_model* m = nullptr;
  EXPECT_EQ(apot_model_load("/nonexistent/a.apot", &m), APOT_ERROR_IO);
  std::string other;
  std::thread t([&] {
    apot_model* n = nullptr;
    apot_model_load("/nonexistent/b.apot", &n);
    other = apot_last_error();
  });
  t.join();
  EXPECT_NE(other.find("b.apot"), std::string::npos);
  EXPECT_NE(std::string(apot_last_error()).find("a.apot"), std::string::npos);
}

// Several threads on one model at once: each gets the logits of its own images.
TEST(CApi, ConcurrentRunsOnOneModel) {
  Loaded l = load_fixture();
  const int threads = 4, rounds = 20;
  std::vector<std::vector<uint8_t>> pixels;
  std::vector<std::vector<float>> want;
  for (int t = 0; t < threads; ++t) {
    pixels.push_back(random_pixels(l.image(), 100 + t));
    want.emplace_back(size_t(l.classes));
    ASSERT_EQ(apot_model_run_u8(l.model, pixels[t].data(), l.image(), 1, APOT_LAYOUT_HWC, want[t].data(),
                                want[t].size(), nullptr),
              APOT_OK);
  }
  std::vector<int> mismatches(threads, 0);
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t)
    pool.emplace_back([&, t] {
      std::vector<float> got(size_t(l.classes));
      for (int r = 0; r < rounds; ++r) {
        if (apot_model_run_u8(l.model, pixels[t].data(), l.image(), 1, APOT_LAYOUT_HWC, got.data(), got.size(),
                              nullptr) != APOT_OK ||
            got != want[t])
          ++mismatches[t];
      }
    });
  for (auto& th : pool) th.join();
  for (int t = 0; t < threads; ++t) EXPECT_EQ(mismatches[t], 0) << "thread " << t;
  apot_model_free(l.model);
}

// After the first call, a run allocates nothing (one thread; batch 1 and a larger batch).
TEST(CApi, NoAllocationAfterTheFirstRun) {
  Loaded l = load_fixture();
  for (int batch : {1, 4}) {
    const std::vector<uint8_t> pixels = random_pixels(batch * l.image(), 9);
    std::vector<float> input(pixels.size(), 0.25f), logits(size_t(batch) * l.classes);
    apot_run_options o;
    apot_run_options_init(&o);
    for (int warm = 0; warm < 2; ++warm) {
      ASSERT_EQ(apot_model_run(l.model, input.data(), input.size(), batch, logits.data(), logits.size(), &o), APOT_OK);
      ASSERT_EQ(apot_model_run_u8(l.model, pixels.data(), pixels.size(), batch, APOT_LAYOUT_HWC, logits.data(),
                                  logits.size(), &o),
                APOT_OK);
    }
    allocations = 0;
    counting = true;
    const apot_status a = apot_model_run(l.model, input.data(), input.size(), batch, logits.data(), logits.size(), &o);
    const apot_status b = apot_model_run_u8(l.model, pixels.data(), pixels.size(), batch, APOT_LAYOUT_HWC,
                                            logits.data(), logits.size(), &o);
    counting = false;
    EXPECT_EQ(a, APOT_OK);
    EXPECT_EQ(b, APOT_OK);
    EXPECT_EQ(allocations.load(), 0) << "batch " << batch;
  }
  // The counter works: an error message allocates.
  allocations = 0;
  counting = true;
  apot_model* m = nullptr;
  apot_model_load("/nonexistent/some/long/path/that/needs/memory/model.apot", &m);
  counting = false;
  EXPECT_GT(allocations.load(), 0);
  apot_model_free(l.model);
}

}  // namespace
