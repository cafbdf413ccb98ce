// Reading torch.save files without Python: the fixtures of tests/fixtures/make_torch_files.py
// (zip, legacy, protocol 4, checkpoints, DataParallel, views, every element type) against what
// PyTorch computed from them, hand-made pickles and zip files for what PyTorch 1.13 does not
// write (PyTorch 2.x storages, hostile pickles), and truncated, corrupted and foreign files,
// which must fail with one std::runtime_error line.
#include <caffe2/serialize/inline_container.h>
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

#include "apot/graph/serialize.h"
#include "apot/qat/checkpoint_import.h"
#include "apot/qat/network.h"
#include "apot/qat/torch_file.h"

using apot::qat::PickleValue;
using Kind = PickleValue::Kind;
using StateDict = std::map<std::string, torch::Tensor>;
using namespace std::string_literals;

namespace {

std::string fixture(const std::string& name) { return std::string(APOT_FIXTURES_DIR) + "/torch_files/" + name; }

const nlohmann::json& expected() {
  static const nlohmann::json json = [] {
    std::ifstream in(fixture("tiny_cnn_expected.json"));
    return nlohmann::json::parse(in);
  }();
  return json;
}

std::string file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// A file in the test's temporary folder, removed at the end of the test.
class TempFile {
 public:
  TempFile(const std::string& name, const std::string& bytes)
      : path_(::testing::TempDir() + "apot-torch-file-" + std::to_string(::getpid()) + "-" + name) {
    std::ofstream(path_, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  }
  ~TempFile() { std::remove(path_.c_str()); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

std::string dtype_name(const torch::Tensor& t) {
  switch (t.scalar_type()) {
    case torch::kFloat: return "float32";
    case torch::kDouble: return "float64";
    case torch::kHalf: return "float16";
    case torch::kBFloat16: return "bfloat16";
    case torch::kLong: return "int64";
    case torch::kInt: return "int32";
    case torch::kShort: return "int16";
    case torch::kChar: return "int8";
    case torch::kByte: return "uint8";
    case torch::kBool: return "bool";
    default: return c10::toString(t.scalar_type());
  }
}

// Shape, element type, sum and first values of every tensor, as the fixture script wrote them.
void expect_tensors(const StateDict& state, const nlohmann::json& want) {
  EXPECT_EQ(state.size(), want.size());
  for (const auto& [name, w] : want.items()) {
    SCOPED_TRACE(name);
    const auto it = state.find(name);
    ASSERT_NE(it, state.end());
    const torch::Tensor& t = it->second;
    EXPECT_EQ(t.sizes().vec(), w["shape"].get<std::vector<int64_t>>());
    EXPECT_EQ(dtype_name(t), w["dtype"].get<std::string>());
    const torch::Tensor flat = t.reshape(-1).to(torch::kDouble);
    const double sum = w["sum"].get<double>();
    EXPECT_NEAR(flat.sum().item<double>(), sum, 1e-6 * (1 + std::abs(sum)));
    const auto first = w["first"].get<std::vector<double>>();
    for (size_t i = 0; i < first.size(); ++i) EXPECT_DOUBLE_EQ(flat[static_cast<int64_t>(i)].item<double>(), first[i]);
  }
}

StateDict read(const std::string& name, const std::string& key = "") {
  return apot::qat::read_state_dict(fixture(name), key);
}

// The message of the std::runtime_error `f` throws ("" and a test failure if it throws none).
template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  ADD_FAILURE() << "no error";
  return "";
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

const char* const kFixtures[] = {"tiny_cnn_state_dict.pt",   "tiny_cnn_legacy.pt",    "tiny_cnn_checkpoint.pt",
                                 "tiny_cnn_dataparallel.pt", "tiny_cnn_ambiguous.pt", "views.pt",
                                 "views_legacy_protocol4.pt"};

// The tiny CNN of make_torch_files.py in eval mode, from a state dict.
torch::Tensor tiny_cnn_forward(const StateDict& p, torch::Tensor x) {
  auto bn = [&](const torch::Tensor& in, const std::string& n) {
    return torch::batch_norm(in, p.at(n + ".weight"), p.at(n + ".bias"), p.at(n + ".running_mean"),
                             p.at(n + ".running_var"), false, 0.1, 1e-5, false);
  };
  x = torch::relu(bn(torch::conv2d(x, p.at("conv1.weight"), {}, 1, 1), "bn1"));
  x = torch::relu(bn(torch::conv2d(x, p.at("conv2.weight"), {}, 2, 1), "bn2"));
  const torch::Tensor pooled = torch::max_pool2d(x, 2, 2);
  x = torch::relu(bn(torch::conv2d(pooled, p.at("conv3.weight"), {}, 1, 1), "bn3") + pooled);
  x = torch::adaptive_avg_pool2d(x, {1, 1}).flatten(1);
  return torch::linear(x, p.at("fc.weight"), p.at("fc.bias"));
}

// ---- hand-made pickles and zip files ----

struct Pickle {
  std::string b = std::string("\x80\x02", 2);
  Pickle& op(const std::string& ops) {
    b += ops;
    return *this;
  }
  Pickle& str(const std::string& s) {
    b += 'X';
    for (int i = 0; i < 4; ++i) b += static_cast<char>((s.size() >> (8 * i)) & 0xff);
    b += s;
    return *this;
  }
  Pickle& int1(int v) {
    b += 'K';
    b += static_cast<char>(v);
    return *this;
  }
  Pickle& global(const std::string& module, const std::string& name) {
    b += "c" + module + "\n" + name + "\n";
    return *this;
  }
  // ('storage', <type>, key, 'cpu', numel) as a persistent id.
  Pickle& storage(const std::string& type, const std::string& key, int numel,
                  const std::string& type_module = "torch") {
    op("(").str("storage").global(type_module, type).str(key).str("cpu").int1(numel).op("tQ");
    return *this;
  }
  // _rebuild_tensor_v2(storage, offset, (sizes), (strides), False, OrderedDict())
  Pickle& tensor(const std::string& type, const std::string& key, int numel, int offset, std::vector<int> sizes,
                 std::vector<int> strides) {
    global("torch._utils", "_rebuild_tensor_v2").op("(").storage(type, key, numel).int1(offset).op("(");
    for (int s : sizes) int1(s);
    op("t(");
    for (int s : strides) int1(s);
    op("t\x89").global("collections", "OrderedDict").op(")Rt").op("R");
    return *this;
  }
  std::string stop() const { return b + "."; }
};

// A zip file as torch.save lays it out: <folder>/data.pkl, <folder>/data/<key>, version.
std::string make_zip(const std::vector<std::pair<std::string, std::string>>& records) {
  std::string out;
  caffe2::serialize::PyTorchStreamWriter writer([&](const void* data, size_t n) {
    out.append(static_cast<const char*>(data), n);
    return n;
  });
  for (const auto& [name, bytes] : records) writer.writeRecord(name, bytes.data(), bytes.size());
  writer.writeEndOfFile();
  return out;
}

std::string floats(std::vector<float> v) { return std::string(reinterpret_cast<const char*>(v.data()), v.size() * 4); }

apot::qat::PickleValuePtr read_bytes(const std::string& bytes) {
  return apot::qat::read_torch_bytes(bytes.data(), bytes.size(), "test.pt");
}

}  // namespace

TEST(TorchFile, ZipStateDictMatchesPyTorch) {
  expect_tensors(read("tiny_cnn_state_dict.pt"), expected()["state_dict"]);
}

TEST(TorchFile, LegacyStateDictMatchesPyTorch) { expect_tensors(read("tiny_cnn_legacy.pt"), expected()["state_dict"]); }

TEST(TorchFile, EvalLogitsMatchPyTorch) {
  const auto input = expected()["input"].get<std::vector<float>>();
  const auto logits = expected()["logits"].get<std::vector<float>>();
  const torch::Tensor x = torch::tensor(input).reshape({1, 1, 28, 28});
  for (const char* name :
       {"tiny_cnn_state_dict.pt", "tiny_cnn_legacy.pt", "tiny_cnn_checkpoint.pt", "tiny_cnn_dataparallel.pt"}) {
    SCOPED_TRACE(name);
    const torch::Tensor out = tiny_cnn_forward(read(name), x);
    EXPECT_TRUE(torch::allclose(out, torch::tensor(logits).reshape({1, 10}), 1e-4, 1e-5)) << out;
  }
}

// The same files imported into the model file's network (recipes/models/fashion-mnist-small-cnn.toml
// describes the fixtures' CNN) evaluate as PyTorch does.
TEST(TorchFile, ImportedIntoTheModelFileNetworkEvaluatesAsPyTorch) {
  const auto input = expected()["input"].get<std::vector<float>>();
  const torch::Tensor x = torch::tensor(input).reshape({1, 1, 28, 28});
  const torch::Tensor want = torch::tensor(expected()["logits"].get<std::vector<float>>()).reshape({1, 10});
  const std::string model_file = std::string(APOT_FIXTURES_DIR) + "/../../recipes/models/fashion-mnist-small-cnn.toml";
  for (const auto& [name, key] : std::vector<std::pair<std::string, std::string>>{{"tiny_cnn_state_dict.pt", ""},
                                                                                  {"tiny_cnn_legacy.pt", ""},
                                                                                  {"tiny_cnn_checkpoint.pt", ""},
                                                                                  {"tiny_cnn_dataparallel.pt", ""},
                                                                                  {"tiny_cnn_ambiguous.pt", "model"}}) {
    SCOPED_TRACE(name);
    apot::qat::Network model = apot::qat::make_network(apot::graph::read_model_file(model_file));
    apot::qat::import_state_dict(*model, fixture(name), key);
    model->eval();
    torch::NoGradGuard no_grad;
    const torch::Tensor out = model(x);
    EXPECT_TRUE(torch::allclose(out, want, 1e-4, 1e-5)) << out;
  }
  apot::qat::Network model = apot::qat::make_network(apot::graph::read_model_file(model_file));
  EXPECT_THROW(apot::qat::import_state_dict(*model, fixture("tiny_cnn_ambiguous.pt")), std::runtime_error);
}

TEST(TorchFile, CheckpointWrapperIsFoundAndTheRestIsKept) {
  expect_tensors(read("tiny_cnn_checkpoint.pt"), expected()["state_dict"]);
  expect_tensors(read("tiny_cnn_checkpoint.pt", "state_dict"), expected()["state_dict"]);
  const auto root = apot::qat::read_torch_file(fixture("tiny_cnn_checkpoint.pt"));
  ASSERT_EQ(root->kind, Kind::Dict);
  EXPECT_EQ(root->get("epoch")->integer, 3);
  EXPECT_DOUBLE_EQ(root->get("best_acc")->number, 91.2);
  const PickleValue* args = root->get("args");
  ASSERT_EQ(args->kind, Kind::Object);
  EXPECT_EQ(args->text, "argparse.Namespace");
  ASSERT_TRUE(args->state);
  EXPECT_DOUBLE_EQ(args->state->get("lr")->number, 0.1);
  EXPECT_EQ(args->state->get("arch")->text, "tiny");
  // The optimiser's momentum buffers: tensors keyed by parameter index.
  const PickleValue* state = root->get("optimizer")->get("state");
  ASSERT_NE(state, nullptr);
  int momentum = 0;
  for (const auto& [index, buffers] : state->entries) {
    EXPECT_EQ(index->kind, Kind::Int);
    momentum += buffers->get("momentum_buffer") && buffers->get("momentum_buffer")->kind == Kind::Tensor;
  }
  EXPECT_EQ(momentum, expected()["optimizer_momentum_tensors"].get<int>());
  EXPECT_EQ(root->get("optimizer")->get("param_groups")->kind, Kind::List);
}

TEST(TorchFile, DataParallelPrefixIsRemoved) {
  const auto root = apot::qat::read_torch_file(fixture("tiny_cnn_dataparallel.pt"));
  EXPECT_NE(root->get("model")->get("module.conv1.weight"), nullptr);
  expect_tensors(read("tiny_cnn_dataparallel.pt"), expected()["state_dict"]);
}

TEST(TorchFile, SeveralStateDictsNeedAKey) {
  const std::string message = error_of([] { read("tiny_cnn_ambiguous.pt"); });
  EXPECT_TRUE(contains(message, "tiny_cnn_ambiguous.pt: ")) << message;
  EXPECT_TRUE(contains(message, "model") && contains(message, "ema") && contains(message, "--key")) << message;
  EXPECT_EQ(message.find('\n'), std::string::npos);
  expect_tensors(read("tiny_cnn_ambiguous.pt", "ema"), expected()["ema"]);
  expect_tensors(read("tiny_cnn_ambiguous.pt", "model"), expected()["state_dict"]);
  const std::string missing = error_of([] { read("tiny_cnn_ambiguous.pt", "teacher"); });
  EXPECT_TRUE(contains(missing, "'teacher'") && contains(missing, "model, ema")) << missing;
}

TEST(TorchFile, DottedKeysReachNestedStateDicts) {
  const auto sd = apot::qat::read_torch_file(fixture("tiny_cnn_state_dict.pt"));
  auto string = [](const std::string& s) {
    auto v = std::make_shared<PickleValue>();
    v->kind = Kind::String;
    v->text = s;
    return v;
  };
  auto inner = std::make_shared<PickleValue>();
  inner->kind = Kind::Dict;
  inner->entries = {{string("model"), sd}, {string("epoch"), std::make_shared<PickleValue>()}};
  PickleValue root;
  root.kind = Kind::Dict;
  root.entries = {{string("checkpoint"), inner}};
  EXPECT_EQ(apot::qat::find_state_dict(root, "checkpoint.model", "x").size(), 20u);
  EXPECT_EQ(apot::qat::find_state_dict(root, "checkpoint", "x").size(), 20u);  // searched below the key
  const std::string message = error_of([&] { apot::qat::find_state_dict(root, "checkpoint.ema", "x"); });
  EXPECT_TRUE(contains(message, "'checkpoint.ema'") && contains(message, "model, epoch")) << message;
  // A dict under a non-wrapper key two levels down is not searched without a key.
  EXPECT_TRUE(contains(error_of([&] { apot::qat::find_state_dict(root, "", "x"); }), "no state dict"));
}

class Views : public ::testing::TestWithParam<const char*> {};

TEST_P(Views, EveryElementTypeAndViewsSharingTheirStorage) {
  StateDict tensors = read(GetParam());
  expect_tensors(tensors, expected()["views"]);
  const torch::Tensor base = tensors["base"], transposed = tensors["transposed"], slice = tensors["slice"];
  EXPECT_FALSE(transposed.is_contiguous());
  EXPECT_EQ(transposed.strides().vec(), (std::vector<int64_t>{1, 6}));
  EXPECT_EQ(slice.storage_offset(), 8);
  EXPECT_TRUE(transposed.storage().is_alias_of(base.storage()));
  EXPECT_TRUE(slice.storage().is_alias_of(base.storage()));
  EXPECT_TRUE(torch::equal(transposed, base.t()));
  EXPECT_TRUE(torch::equal(slice, base.slice(0, 1, 3).slice(1, 2, 5)));
  base.fill_(1);  // one storage: the views see it
  EXPECT_EQ(slice.sum().item<float>(), 6.0f);
  EXPECT_TRUE(torch::equal(tensors["int64"],
                           torch::tensor({int64_t{1}, int64_t{-2}, int64_t{3}, int64_t{1} << 40}).reshape({2, 2})));
  EXPECT_TRUE(torch::equal(tensors["bool"], torch::tensor({true, false, true, true})));
  EXPECT_EQ(tensors["scalar"].dim(), 0);
  EXPECT_EQ(tensors["scalar"].item<float>(), 3.5f);
  EXPECT_EQ(tensors["uint8"][0].item<int>(), 250);
}

// The zip file with protocol 2 (torch.save's default) and the legacy one with protocol 4.
INSTANTIATE_TEST_SUITE_P(TorchFile, Views, ::testing::Values("views.pt", "views_legacy_protocol4.pt"));

TEST(TorchFile, ImportIntoAModuleWithAKey) {
  // The tiny CNN as LibTorch modules, loaded through import_state_dict.
  struct TinyCnn : torch::nn::Module {
    TinyCnn() {
      using namespace torch::nn;
      register_module("conv1", Conv2d(Conv2dOptions(1, 8, 3).padding(1).bias(false)));
      register_module("bn1", BatchNorm2d(8));
      register_module("conv2", Conv2d(Conv2dOptions(8, 16, 3).stride(2).padding(1).bias(false)));
      register_module("bn2", BatchNorm2d(16));
      register_module("conv3", Conv2d(Conv2dOptions(16, 16, 3).padding(1).bias(false)));
      register_module("bn3", BatchNorm2d(16));
      register_module("fc", Linear(16, 10));
    }
  } model;
  apot::qat::import_state_dict(model, fixture("tiny_cnn_ambiguous.pt"), "ema");
  EXPECT_TRUE(torch::equal(model.named_parameters()["fc.bias"], read("tiny_cnn_ambiguous.pt", "ema")["fc.bias"]));
  EXPECT_THROW(apot::qat::import_state_dict(model, fixture("tiny_cnn_ambiguous.pt")), std::runtime_error);
}

TEST(TorchFile, LibTorchPickleSaveIsRead) {
  c10::Dict<std::string, torch::Tensor> dict;
  dict.insert("a", torch::arange(6, torch::kFloat).reshape({2, 3}));
  dict.insert("module.b", torch::ones({2}, torch::kLong));
  const std::vector<char> bytes = torch::pickle_save(c10::IValue(dict));
  const StateDict state =
      apot::qat::find_state_dict(*apot::qat::read_torch_bytes(bytes.data(), bytes.size(), "m"), "", "m");
  ASSERT_EQ(state.size(), 2u);
  EXPECT_TRUE(torch::equal(state.at("a"), dict.at("a")));
  EXPECT_TRUE(torch::equal(state.at("b"), dict.at("module.b")));
}

TEST(TorchFile, PyTorch2StorageFormsAndTensorChecks) {
  // _rebuild_tensor_v3 over an UntypedStorage (bytes), as PyTorch 2.x writes some element types.
  Pickle v3;
  v3.op("}(").str("w").global("torch._utils", "_rebuild_tensor_v3").op("(");
  v3.storage("UntypedStorage", "0", 12, "torch.storage").int1(1).op("(").int1(2).op("t(").int1(1).op("t\x89");
  v3.global("collections", "OrderedDict").op(")R").global("torch", "float32").op("tRu");
  const auto root = read_bytes(make_zip({{"data.pkl", v3.stop()}, {"data/0", floats({1, 2, 3})}}));
  EXPECT_TRUE(torch::equal(root->get("w")->tensor, torch::tensor({2.0f, 3.0f})));

  auto with_tensor = [](int numel, int offset, std::vector<int> sizes, std::vector<int> strides) {
    Pickle p;
    p.op("}(").str("w").tensor("FloatStorage", "0", numel, offset, sizes, strides).op("u");
    return p.stop();
  };
  const std::string ok = with_tensor(4, 1, {3}, {1});
  EXPECT_TRUE(torch::equal(read_bytes(make_zip({{"data.pkl", ok}, {"data/0", floats({1, 2, 3, 4})}}))->get("w")->tensor,
                           torch::tensor({2.0f, 3.0f, 4.0f})));
  const std::string outside = with_tensor(4, 1, {2, 2}, {2, 1});  // reaches element 4 of 0..3
  EXPECT_TRUE(contains(error_of([&] {
                         read_bytes(make_zip({{"data.pkl", outside}, {"data/0", floats({1, 2, 3, 4})}}));
                       }),
                       "outside its storage"));
  EXPECT_TRUE(contains(error_of([&] {
                         read_bytes(make_zip({{"data.pkl", ok}, {"data/1", floats({1, 2, 3, 4})}}));
                       }),
                       "storage key 0 missing"));
  EXPECT_TRUE(contains(error_of([&] {
                         read_bytes(make_zip({{"data.pkl", ok}, {"data/0", floats({1, 2})}}));
                       }),
                       "elements were promised"));
  Pickle odd;
  odd.op("}(").str("w").global("torch._utils", "_rebuild_tensor_v2").op("(").storage("QInt8Storage", "0", 4).op("tRu");
  EXPECT_TRUE(contains(error_of([&] {
                         read_bytes(make_zip({{"data.pkl", odd.stop()}, {"data/0", "abcd"}}));
                       }),
                       "unsupported storage type torch.QInt8Storage"));
  // A quantised tensor beside plain ones is named, not silently dropped.
  Pickle quantised;
  quantised.op("}(").str("w").tensor("FloatStorage", "0", 1, 0, {1}, {1});
  quantised.str("q").global("torch._utils", "_rebuild_qtensor").op(")Ru");
  const auto root_q = read_bytes(make_zip({{"data.pkl", quantised.stop()}, {"data/0", floats({1})}}));
  const std::string message = error_of([&] { apot::qat::find_state_dict(*root_q, "", "q.pt"); });
  EXPECT_TRUE(contains(message, "q.pt: 'q' is a tensor") && contains(message, "_rebuild_qtensor")) << message;
}

TEST(TorchFile, HostilePicklesFailCleanly) {
  auto pickle_error = [](const std::string& pickle) {
    return error_of([&] { read_bytes(make_zip({{"data.pkl", pickle}})); });
  };
  EXPECT_TRUE(contains(pickle_error(Pickle()
                                        .op("]q\x00h\x00"
                                            "a"s)
                                        .stop()),
                       "contains itself"));
  // A cycle through a second list: b = [a], then a.append(b).
  EXPECT_TRUE(contains(pickle_error(Pickle()
                                        .op("]q\x00]q\x01h\x00"
                                            "a0h\x01"
                                            "a"s)
                                        .stop()),
                       "cycle"));
  EXPECT_TRUE(
      contains(pickle_error(Pickle().op(std::string(1000, ']') + std::string(999, 'a')).stop()), "nested more than"));
  EXPECT_TRUE(contains(pickle_error(Pickle().op("\x07").stop()), "unknown opcode 0x07"));
  EXPECT_TRUE(contains(pickle_error(Pickle().op("h\x05").stop()), "memo entry 5"));
  EXPECT_TRUE(contains(pickle_error(Pickle().op("a").stop()), "stack underflow"));
  EXPECT_TRUE(contains(pickle_error(Pickle()
                                        .op("X\xff\xff\xff\x7f"
                                            "abc")
                                        .stop()),
                       "truncated"));
  EXPECT_TRUE(contains(pickle_error(Pickle().op("}").b), "before its STOP"));
  EXPECT_TRUE(contains(pickle_error(Pickle().op("N").storage("FloatStorage", "0", 1).stop()), "storage key 0 missing"));
  // Unknown classes, numpy scalars and sets are opaque or plain values, never errors.
  Pickle tolerant;
  tolerant.op("}(").str("obj").global("my.module", "Thing").op(")\x81}(").str("x").int1(1).op("ub");
  tolerant.str("np").global("numpy.core.multiarray", "scalar").global("numpy", "dtype").str("f8").op("\x89\x88\x87R");
  tolerant.global("_codecs", "encode").str("\xc3\xbf\x01").str("latin1").op("\x86R\x86R");
  tolerant.str("set")
      .op("\x8f(K\x01K\x02\x90")
      .str("big")
      .op("\x8a\x0a")
      .op(std::string("\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19", 10));
  tolerant.op("u");
  const auto root = read_bytes(make_zip({{"data.pkl", tolerant.stop()}}));
  EXPECT_EQ(root->get("obj")->text, "my.module.Thing");
  EXPECT_EQ(root->get("obj")->state->get("x")->integer, 1);
  EXPECT_EQ(root->get("np")->items.at(1)->text, std::string("\xff\x01"));
  EXPECT_EQ(root->get("set")->items.size(), 2u);
  EXPECT_EQ(root->get("big")->kind, Kind::BigInt);
  EXPECT_TRUE(contains(error_of([&] { apot::qat::find_state_dict(*root, "", "t.pt"); }), "t.pt: holds no state dict"));
}

TEST(TorchFile, ProtocolOneLegacyHeaderIsRead) {
  // Protocol 1 writes the magic number as a decimal LONG; the rest is binary.
  const std::string file = "L119547037146038801333356L\n.M\xe9\x03.}.}(X\x01\0\0\0bL-18446744073709551617L\nu.]."s;
  const auto root = read_bytes(file);
  ASSERT_EQ(root->get("b")->kind, Kind::BigInt);
  EXPECT_EQ(root->get("b")->text, "\xff\xff\xff\xff\xff\xff\xff\xff\xfe"s);  // -(2^64 + 1)
}

TEST(TorchFile, ForeignFilesFailClearly) {
  const TempFile text("text.pt", "hello, this is not a checkpoint\n");
  EXPECT_TRUE(contains(error_of([&] { apot::qat::read_state_dict(text.path()); }), "not a torch.save file"));
  const TempFile empty("empty.pt", "");
  EXPECT_TRUE(contains(error_of([&] { apot::qat::read_state_dict(empty.path()); }), "empty file"));
  EXPECT_TRUE(
      contains(error_of([] { apot::qat::read_state_dict("/nonexistent/x.pt"); }), "/nonexistent/x.pt: cannot open"));
  // A plain pickle.dump of a dict: a pickle, but without torch's magic number.
  EXPECT_TRUE(contains(error_of([] { read_bytes(Pickle().op("}").stop()); }), "magic number"));
  EXPECT_TRUE(contains(error_of([] {
                         read_bytes(make_zip({{"code/m.py", "x"}, {"constants.pkl", "x"}}));
                       }),
                       "TorchScript"));
  EXPECT_TRUE(contains(error_of([] { read_bytes(make_zip({{"other.bin", "x"}})); }), "without data.pkl"));
  std::string tar(600, '\0');
  tar.replace(257, 5, "ustar");
  EXPECT_TRUE(contains(error_of([&] { read_bytes(tar); }), "tar-format"));
}

TEST(TorchFile, TruncatedFilesFail) {
  for (const char* name : kFixtures) {
    const std::string bytes = file_bytes(fixture(name));
    ASSERT_GT(bytes.size(), 1000u) << name;
    std::vector<size_t> cuts{
        0, 1, 2, 3, 4, 10, 30, 64, 100, 200, bytes.size() - 100, bytes.size() - 22, bytes.size() - 1};
    for (size_t i = 1; i < 40; ++i) cuts.push_back(bytes.size() * i / 40);
    for (size_t cut : cuts) {
      const std::string message = error_of([&] { read_bytes(bytes.substr(0, cut)); });
      EXPECT_TRUE(contains(message, "test.pt: ")) << name << " cut at " << cut << ": " << message;
    }
    // Through a file on disk too.
    const TempFile half(std::string("half-") + name, bytes.substr(0, bytes.size() / 2));
    EXPECT_TRUE(contains(error_of([&] { apot::qat::read_state_dict(half.path()); }), half.path() + ": "));
  }
  // The legacy file cut at every byte of its pickles and of its first storage.
  const std::string legacy = file_bytes(fixture("tiny_cnn_legacy.pt"));
  for (size_t cut = 0; cut < 3000; ++cut) EXPECT_THROW(read_bytes(legacy.substr(0, cut)), std::runtime_error) << cut;
}

TEST(TorchFile, CorruptedFilesNeverCrash) {
  // Flipped bytes either read (a flip in tensor data, or in a name) or fail with a
  // std::runtime_error; nothing else escapes and nothing crashes.
  uint64_t state = 12345;
  auto next = [&] { return state = state * 6364136223846793005ull + 1442695040888963407ull, state >> 33; };
  for (const char* name : kFixtures) {
    const std::string bytes = file_bytes(fixture(name));
    const std::string key = std::string(name) == "tiny_cnn_ambiguous.pt" ? "ema" : "";
    int failed = 0;
    for (int trial = 0; trial < 400; ++trial) {
      std::string copy = bytes;
      const int flips = 1 + static_cast<int>(next() % 3);
      for (int f = 0; f < flips; ++f) copy[next() % copy.size()] ^= static_cast<char>(1 + next() % 255);
      try {
        apot::qat::find_state_dict(*read_bytes(copy), key, "test.pt");
      } catch (const std::runtime_error& e) {
        ++failed;
        EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos) << e.what();
      }
    }
    EXPECT_GT(failed, 0) << name;
  }
  // Flips that must be caught: the first byte, the legacy magic number, an opcode of data.pkl.
  // (LibTorch's zip reader skips CRC checks, as torch.load does: a flip in a storage is read.)
  std::string legacy = file_bytes(fixture("tiny_cnn_legacy.pt"));
  legacy[5] ^= 1;
  EXPECT_TRUE(contains(error_of([&] { read_bytes(legacy); }), "magic number"));
  std::string zip = file_bytes(fixture("tiny_cnn_state_dict.pt"));
  zip[0] = 'Q';
  EXPECT_TRUE(contains(error_of([&] { read_bytes(zip); }), "not a torch.save file"));
  zip = file_bytes(fixture("tiny_cnn_state_dict.pt"));
  zip[caffe2::serialize::PyTorchStreamReader(fixture("tiny_cnn_state_dict.pt")).getRecordOffset("data.pkl")] = 0x07;
  EXPECT_TRUE(contains(error_of([&] { read_bytes(zip); }), "unknown opcode 0x07 (at byte 0 of data.pkl)"));
}
