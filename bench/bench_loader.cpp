// Images per second of the loader on an ImageFolder (CIFAR-10 JPEG training set: decode,
// random crop with padding, flip, normalise, batch), for 1 and 2 workers, next to the images
// per second a W4A4 ResNet-20 training step consumes (measured in the same run).
// Usage: bench_loader DIR [--images N]
#include <chrono>
#include <cstdio>
#include <string>

#include "apot/data/loader.h"
#include "apot/data/spec.h"
#include "apot/qat/network.h"

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: bench_loader IMAGEFOLDER_DIR [--images N]\n");
    return 2;
  }
  size_t images = 20000;
  for (int i = 2; i + 1 < argc; i += 2)
    if (std::string(argv[i]) == "--images") images = std::stoul(argv[i + 1]);
  const auto spec = apot::data::parse_data_spec(std::string("imagefolder:") + argv[1]);
  const auto train = apot::data::open_dataset(spec, apot::data::Split::train);
  std::vector<size_t> subset;
  for (size_t i = 0; i < std::min(images, train->size()); ++i)
    subset.push_back(i * (train->size() / std::min(images, train->size())));
  std::printf("bench_loader: %s, %zu images per pass\n", train->description().c_str(), subset.size());
  double loader_rate = 0;
  for (int workers : {1, 2}) {
    apot::data::LoaderOptions o;
    o.batch_size = 128;
    o.workers = workers;
    o.transform = apot::data::default_transform(spec, apot::data::Split::train, train.get());
    apot::data::Loader loader(train, o, subset);
    loader.start_epoch(0);
    apot::data::Batch b;
    size_t n = 0;
    const auto t0 = std::chrono::steady_clock::now();
    while (loader.next(b)) n += b.labels.numel();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("  loader, %d worker(s): %8.0f images/s\n", workers, n / s);
    loader_rate = std::max(loader_rate, n / s);
  }
  // What a training step consumes: W4A4 ResNet-20, batch 128, 2 threads.
  torch::set_num_threads(2);
  auto model = apot::qat::make_network("resnet20");
  apot::qat::apply_policy(*model, apot::qat::QuantPolicy{});
  torch::optim::SGD sgd(model->parameters(), torch::optim::SGDOptions(0.01).momentum(0.9));
  const torch::Tensor x = torch::randn({128, 3, 32, 32});
  const torch::Tensor y = torch::randint(0, 10, {128}, torch::kLong);
  double best = 1e9;
  for (int r = 0; r < 6; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    sgd.zero_grad();
    torch::nn::functional::cross_entropy(model(x), y).backward();
    sgd.step();
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::printf("  W4A4 ResNet-20 training step consumes %8.0f images/s (best of 6 steps)\n", 128 / best);
  std::printf("  loader / training ratio: %.1fx (goal: at least 5x)\n", loader_rate / (128 / best));
  return 0;
}
