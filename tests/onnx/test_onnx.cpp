// ONNX import against fixtures exported by PyTorch itself (tests/fixtures/make_onnx_files.py):
// the graph and weights it makes, and one clear error for what it cannot import. That the
// imported network computes PyTorch's logits is tested with LibTorch in tests/train.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "apot/onnx/onnx_import.h"

namespace apot::onnx_import {
namespace {

using graph::Activation;
using graph::Op;

std::string fixture(const std::string& name) { return std::string(APOT_SOURCE_DIR) + "/tests/fixtures/onnx/" + name; }

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The message of the error `f` throws, checked to be of type E.
template <typename E, typename F>
std::string error_of(F f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "wrong exception type: " << e.what();
    return "";
  }
  ADD_FAILURE() << "no exception";
  return "";
}

#ifdef APOT_WITH_ONNX

TEST(Onnx, TinyCnnWithFoldedBatchNormsBecomesTheGraph) {
  const Model m = read_onnx(fixture("tiny_cnn.onnx"));
  const graph::Graph& g = m.graph;
  EXPECT_EQ(g.arch, "tiny_cnn");
  EXPECT_EQ(m.height, 28);
  EXPECT_EQ(m.width, 28);
  EXPECT_EQ(g.in_channels(), 1);
  EXPECT_EQ(g.num_classes(), 10);
  // conv1 conv2 MaxPool conv3 Add GlobalAveragePool Flatten fc, after the input.
  ASSERT_EQ(g.size(), 9u);
  const graph::Node& conv1 = g.at("conv1");
  EXPECT_EQ(conv1.op, Op::conv);
  EXPECT_TRUE(conv1.bias);  // the folded batch norm
  EXPECT_TRUE(conv1.batch_norm.empty());
  EXPECT_EQ(conv1.activation, Activation::relu);
  EXPECT_EQ(conv1.padding, 1);
  EXPECT_EQ(g.at("conv2").stride, 2);
  EXPECT_EQ(g.at("conv3").activation, Activation::none);
  const graph::Node& pool = g[3];
  EXPECT_EQ(pool.op, Op::max_pool);
  EXPECT_EQ(pool.kernel, 2);
  EXPECT_EQ(pool.stride, 2);
  const graph::Node& add = g[5];
  EXPECT_EQ(add.op, Op::add);
  EXPECT_EQ(add.activation, Activation::relu);
  EXPECT_EQ(add.inputs, (std::vector<int>{g.find("conv3"), 3}));
  EXPECT_EQ(g[6].op, Op::global_avg_pool);
  EXPECT_EQ(g[7].op, Op::flatten);
  const graph::Node& fc = g.at("fc");
  EXPECT_EQ(fc.op, Op::linear);
  EXPECT_EQ(fc.out_channels, 10);
  EXPECT_EQ(g.output(), g.find("fc"));
  EXPECT_EQ(g.at("conv3").shape, (graph::Shape{16, 7, 7}));

  ASSERT_EQ(m.weights.size(), 8u);
  EXPECT_EQ(m.weights.at("conv2.weight").shape, (std::vector<int64_t>{16, 8, 3, 3}));
  EXPECT_EQ(m.weights.at("conv2.bias").shape, (std::vector<int64_t>{16}));
  EXPECT_EQ(m.weights.at("fc.weight").shape, (std::vector<int64_t>{10, 16}));
  EXPECT_EQ(m.weights.at("fc.weight").values.size(), 160u);
}

TEST(Onnx, OpsNetKeepsBatchNormsAndFusesClipsBiasesAndNoOps) {
  const Model m = read_onnx(fixture("ops_net.onnx"));
  const graph::Graph& g = m.graph;
  std::vector<std::string> names;
  for (const auto& n : g.nodes()) names.push_back(n.name);
  // Pad by zero, Dropout and the Shape / Gather / Concat arithmetic of x.view(x.size(0), -1)
  // leave no node.
  EXPECT_EQ(names, (std::vector<std::string>{"input", "stem", "AveragePool", "grouped", "MaxPool", "depthwise",
                                             "project", "Add", "GlobalAveragePool", "Reshape", "MatMul"}));
  const graph::Node& stem = g.at("stem");
  EXPECT_EQ(stem.batch_norm, "stem_bn");
  EXPECT_EQ(stem.activation, Activation::clamp);  // Relu then Clip(0, 6): F.relu6
  EXPECT_EQ(stem.clamp_lo, 0.f);
  EXPECT_EQ(stem.clamp_hi, 6.f);
  EXPECT_EQ(g.at("AveragePool").op, Op::avg_pool);
  EXPECT_EQ(g.at("grouped").groups, 2);
  EXPECT_EQ(g.at("grouped").batch_norm, "grouped_bn");
  EXPECT_EQ(g.at("MaxPool").padding, 1);
  EXPECT_EQ(g.at("MaxPool").stride, 1);
  EXPECT_EQ(g.at("depthwise").groups, 16);
  EXPECT_TRUE(g.at("depthwise").bias);
  EXPECT_EQ(g.at("depthwise").activation, Activation::relu);
  EXPECT_EQ(g.at("project").batch_norm, "project_bn");
  EXPECT_EQ(g.at("Add").activation, Activation::relu);
  EXPECT_EQ(g.at("Reshape").op, Op::flatten);
  const graph::Node& fc = g.at("MatMul");
  EXPECT_EQ(fc.op, Op::linear);
  EXPECT_TRUE(fc.bias);  // the Add of `+ self.bias`
  // MatMul's weight is in x out; the graph's linear weight is out x in.
  const Array& w = m.weights.at("MatMul.weight");
  EXPECT_EQ(w.shape, (std::vector<int64_t>{10, 16}));
  for (const char* p : {"weight", "bias", "running_mean", "running_var"})
    EXPECT_EQ(m.weights.at(std::string("project_bn.") + p).shape, (std::vector<int64_t>{16})) << p;
}

TEST(Onnx, OptionAShortcutBecomesOneShortcutPadNode) {
  // x[:, :, ::2, ::2] (two Slice nodes) and F.pad(..., (0, 0, 0, 0, 2, 2)), whose pads come
  // from a chain of constant ops, make one node: subsample by 2, 4 -> 8 channels.
  const Model m = read_onnx(fixture("shortcut_a.onnx"));
  const graph::Graph& g = m.graph;
  int pads = 0;
  for (const auto& n : g.nodes()) {
    if (n.op != Op::shortcut_pad) continue;
    ++pads;
    EXPECT_EQ(n.stride, 2);
    EXPECT_EQ(n.out_channels, 8);
    EXPECT_EQ(n.inputs, std::vector<int>{g.find("conv1")});
    EXPECT_EQ(n.shape, (graph::Shape{8, 14, 14}));
  }
  EXPECT_EQ(pads, 1);
  EXPECT_EQ(g.size(), 9u);  // input conv1 conv2 conv3 shortcut add gap flatten fc
}

TEST(Onnx, UnsupportedOpNamesTheOpAndTheNode) {
  const std::string e = error_of<graph::GraphError>([] { read_onnx(fixture("unsupported_op.onnx")); });
  EXPECT_NE(e.find("unsupported_op.onnx"), std::string::npos) << e;
  EXPECT_NE(e.find("Sigmoid"), std::string::npos) << e;
  EXPECT_NE(e.find("node '/1/Sigmoid'"), std::string::npos) << e;
  EXPECT_EQ(e.find('\n'), std::string::npos) << e;
}

TEST(Onnx, PatternsTheGraphCannotHoldAreErrorsNotOtherFunctions) {
  // relu(y) + y: fusing the ReLU into y's conv would make the add read relu(y) twice.
  std::string e = error_of<graph::GraphError>([] { read_onnx(fixture("alias_reuse.onnx")); });
  EXPECT_NE(e.find("Relu: its input '/conv/Conv_output_0' is also read by another node"), std::string::npos) << e;
  // conv(x[:, :, ::2]): a height-only subsampling the graph has no node for.
  e = error_of<graph::GraphError>([] { read_onnx(fixture("half_slice.onnx")); });
  EXPECT_NE(e.find("Conv: reads '/Slice_output_0', which a Slice subsampled in height or width alone"),
            std::string::npos)
      << e;
}

TEST(Onnx, DynamicHeightIsRefused) {
  const std::string e = error_of<graph::GraphError>([] { read_onnx(fixture("dynamic_hw.onnx")); });
  EXPECT_NE(e.find("dynamic height ('height')"), std::string::npos) << e;
}

TEST(Onnx, CorruptOrMissingFilesAreNotGraphErrors) {
  const std::string bytes = read_bytes(fixture("tiny_cnn.onnx"));
  ASSERT_GT(bytes.size(), 1000u);
  // Truncated in the middle of a weight, and cut to nothing.
  std::string e = error_of<std::runtime_error>([&] { read_onnx_bytes(bytes.substr(0, bytes.size() / 2), "cut.onnx"); });
  EXPECT_NE(e.find("cut.onnx: not an ONNX model"), std::string::npos) << e;
  e = error_of<std::runtime_error>([&] { read_onnx_bytes("", "empty.onnx"); });
  EXPECT_NE(e.find("not an ONNX model"), std::string::npos) << e;
  e = error_of<std::runtime_error>([&] { read_onnx_bytes("PK\x03\x04 this is a zip", "zip.onnx"); });
  EXPECT_NE(e.find("not an ONNX model"), std::string::npos) << e;
  e = error_of<std::runtime_error>([&] { read_onnx(fixture("absent.onnx")); });
  EXPECT_NE(e.find("cannot open"), std::string::npos) << e;
}

TEST(Onnx, EveryPrefixOfAFileFailsCleanly) {
  // Whatever a truncation leaves, the reader throws (it never crashes or returns half a graph).
  const std::string bytes = read_bytes(fixture("ops_net.onnx"));
  for (size_t n = 0; n < bytes.size(); n += 97) {
    try {
      const Model m = read_onnx_bytes(bytes.substr(0, n), "cut.onnx");
      ADD_FAILURE() << "a prefix of " << n << " bytes imported as " << m.graph.size() << " nodes";
    } catch (const std::exception&) {
    }
  }
}

TEST(Onnx, PathsAreRecognisedByExtension) {
  EXPECT_TRUE(is_onnx_path("a/b/net.onnx"));
  EXPECT_FALSE(is_onnx_path("net.pt"));
  EXPECT_FALSE(is_onnx_path("onnx"));
  EXPECT_TRUE(available());
}

#else

TEST(Onnx, WithoutLibonnxTheReaderSaysSo) {
  EXPECT_FALSE(available());
  const std::string e = error_of<graph::GraphError>([] { read_onnx(fixture("tiny_cnn.onnx")); });
  EXPECT_NE(e.find("without ONNX support"), std::string::npos) << e;
}

#endif

}  // namespace
}  // namespace apot::onnx_import
