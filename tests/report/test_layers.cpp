// The per-layer statistics of apot report: histogram, level usage and SQNR against hand-worked
// values, the JSON round trip and its errors, and the layer section of the HTML page.
#include "apot/report/layers.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "apot/report/report.h"

namespace {
using apot::report::Histogram;
using apot::report::LayerReport;
using apot::report::LayerStats;
using apot::report::QuantizerStats;
using nlohmann::json;

TEST(Layers, HistogramBinsAndCountsWhatFallsOutside) {
  const Histogram h = apot::report::make_histogram({-2, -1, -0.5f, 0, 0.49f, 0.5f, 1, 3, NAN}, -1, 1, 4);
  EXPECT_EQ(h.counts, (std::vector<int64_t>{1, 1, 2, 2}));  // [-1,-.5) [-.5,0) [0,.5) [.5,1]
  EXPECT_EQ(h.below, 1);
  EXPECT_EQ(h.above, 1);
  EXPECT_THROW(apot::report::make_histogram({}, 1, 1, 4), std::invalid_argument);
  EXPECT_THROW(apot::report::make_histogram({}, 0, 1, 0), std::invalid_argument);
}

TEST(Layers, LevelUsageCountsTheNearestLevel) {
  const std::vector<float> levels{-1, 0, 0.5f, 1};
  EXPECT_EQ(apot::report::level_usage({-1, -1, 0, 0.5f, 0.5f, 0.5f, 1, 0.26f, -3, 7}, levels),
            (std::vector<int64_t>{3, 1, 4, 2}));
  EXPECT_EQ(apot::report::level_usage({1, 2}, {}), std::vector<int64_t>{});
}

TEST(Layers, SqnrInDecibels) {
  EXPECT_DOUBLE_EQ(apot::report::sqnr_db(100, 1), 20);
  EXPECT_TRUE(std::isinf(apot::report::sqnr_db(1, 0)));
  EXPECT_TRUE(std::isnan(apot::report::sqnr_db(0, 0)));
  const auto [s, n] = apot::report::signal_and_noise({3, 4}, {3, 3});
  EXPECT_DOUBLE_EQ(s, 25);
  EXPECT_DOUBLE_EQ(n, 1);
  EXPECT_THROW(apot::report::signal_and_noise({1}, {1, 2}), std::invalid_argument);
}

TEST(Layers, QuantizerStatsSpanTheLevelsAndCountClipping) {
  const std::vector<float> values{-2, -0.9f, 0.1f, 0.6f, 1.5f};
  const std::vector<float> quantized{-1, -1, 0, 0.5f, 1};
  const QuantizerStats q = apot::report::quantizer_stats("test", values, quantized, {-1, 0, 0.5f, 1}, 1, false, 10);
  EXPECT_DOUBLE_EQ(q.histogram.lo, -1.3);
  EXPECT_DOUBLE_EQ(q.histogram.hi, 1.3);
  EXPECT_EQ(q.histogram.below + q.histogram.above, 2);
  EXPECT_EQ(q.usage, (std::vector<int64_t>{2, 1, 1, 1}));
  EXPECT_DOUBLE_EQ(q.clipped, 0.4);
  EXPECT_EQ(q.count, 5);
  const auto [s, n] = apot::report::signal_and_noise(values, quantized);
  EXPECT_DOUBLE_EQ(q.sqnr_db, apot::report::sqnr_db(s, n));
  // Without levels (float weights): the values' own range, no usage, no SQNR.
  const QuantizerStats f = apot::report::quantizer_stats("float", values, {}, {}, 0, false, 10);
  EXPECT_FLOAT_EQ(float(f.histogram.lo), -2.0f);
  EXPECT_FLOAT_EQ(float(f.histogram.hi), 1.5f);
  EXPECT_TRUE(f.usage.empty());
  EXPECT_TRUE(std::isnan(f.sqnr_db));
}

LayerReport sample_report() {
  LayerReport r;
  r.checkpoint = "run/best.ckpt";
  r.data = "fashion-mnist";
  r.images = 8;
  r.config = {{"quant.kind", "apot"}, {"quant.weight_bits", 3}, {"quant.act_bits", 3}, {"model.arch", "resnet20"}};
  LayerStats a;
  a.name = "conv1";
  a.op = "conv";
  a.quant = "int8";
  a.macs = 100;
  a.fixops = 100;
  a.size_bytes = 27;
  a.weight = apot::report::quantizer_stats("int8", {-1, 0, 1}, {-1, 0, 1}, {}, 0, false, 8);
  a.output_sqnr_db = INFINITY;
  LayerStats b = a;
  b.name = "layer1.0.conv1";
  b.quant = "W3A3 apot";
  b.fixops = 50;
  b.weight = apot::report::quantizer_stats("apot-w3", {-1, 0.2f, 1}, {-1, 0, 1}, {-1, 0, 1}, 1, false, 8);
  b.input = apot::report::quantizer_stats("apot-a3", {0, 0.7f, 2}, {0, 1, 2}, {0, 1, 2}, 2, false, 8);
  b.output_sqnr_db = 12.5;
  r.layers = {a, b};
  return r;
}

TEST(Layers, JsonRoundTripKeepsEveryNumber) {
  const LayerReport r = sample_report();
  const json j = apot::report::to_json(r);
  EXPECT_TRUE(j["layers"][0]["output_sqnr_db"].is_null());  // +inf has no JSON form
  EXPECT_DOUBLE_EQ(j["total_fixops"].get<double>(), 150);
  const LayerReport back = apot::report::layer_report_from_json(json::parse(j.dump()));
  ASSERT_EQ(back.layers.size(), 2u);
  EXPECT_EQ(back.layers[1].input->usage, r.layers[1].input->usage);
  EXPECT_EQ(back.layers[1].weight->histogram.counts, r.layers[1].weight->histogram.counts);
  EXPECT_DOUBLE_EQ(back.layers[1].output_sqnr_db, 12.5);
  EXPECT_TRUE(std::isnan(back.layers[0].output_sqnr_db));
  EXPECT_FALSE(back.layers[0].input.has_value());
  EXPECT_EQ(back.config, r.config);
}

TEST(Layers, MalformedJsonNamesTheLayerAndField) {
  json j = apot::report::to_json(sample_report());
  j["layers"][1]["weight"].erase("usage");
  try {
    apot::report::layer_report_from_json(j);
    FAIL() << "no error";
  } catch (const apot::report::ReportError& e) {
    EXPECT_STREQ(e.what(), "layers.json: layer1.0.conv1 weight: missing or malformed \"usage\"");
  }
  j = apot::report::to_json(sample_report());
  j["layers"][1]["input"]["usage"] = {1};
  EXPECT_THROW(apot::report::layer_report_from_json(j), apot::report::ReportError);
  EXPECT_THROW(apot::report::layer_report_from_json(json::array()), apot::report::ReportError);
}

TEST(Layers, HistogramSvgDrawsBarsAndOneLinePerLevel) {
  const QuantizerStats q = sample_report().layers[1].weight.value();
  const std::string bare = apot::report::histogram_svg({"w", "x", q.histogram, {}, false});
  const std::string with_levels = apot::report::histogram_svg({"w", "x", q.histogram, q.levels, false});
  EXPECT_NE(bare.find("<svg"), std::string::npos);
  EXPECT_GT(with_levels.size(), bare.size());
  EXPECT_THROW(apot::report::histogram_svg({"w", "x", Histogram{}, {}, false}), apot::report::ReportError);
}

TEST(Layers, CompactSvgMergesEquallyStyledLinesAndKeepsLabels) {
  const std::string plplot =
      "<svg viewBox=\"0 0 560 340\" >\n <g transform=\"matrix(1.000000 0.000000 0.000000 -1.000000 0 340)\" >\n"
      "<polyline stroke-width=\"1.000000e+00\" stroke=\"#000000\" stroke-opacity=\"1.000000\" fill=\"none\" "
      "points=\"64.812345,40.50 519.50,40.50  \"/> <polyline stroke-width=\"1.000000e+00\" stroke=\"#000000\" "
      "stroke-opacity=\"1.000000\" fill=\"none\" points=\"64.81,40.50 64.81,43.87\"/>\n"
      "<polyline stroke-width=\"2.000000e+00\" stroke=\"#1F77B4\" stroke-opacity=\"1.000000\" fill=\"none\" "
      "points=\"1,2 3,4\"/><text x=\"0.000000\">0.005</text>"
      "<polyline stroke-width=\"1.000000e+00\" stroke=\"#000000\" stroke-opacity=\"1.000000\" fill=\"none\" "
      "points=\"5,6 7,8\"/></g></svg>";
  EXPECT_EQ(apot::report::compact_svg(plplot),
            "<svg viewBox=\"0 0 560 340\" > <g transform=\"matrix(1.00 0.00 0.00 -1.00 0 340)\" > "
            "<path stroke-width=\"1.00\" stroke=\"#000000\" fill=\"none\" d=\"M64.81,40.50 519.50,40.50M64.81,40.50 "
            "64.81,43.87\"/><path stroke-width=\"2.00\" stroke=\"#1F77B4\" fill=\"none\" d=\"M1,2 3,4\"/>"
            "<text x=\"0.00\">0.005</text><path stroke-width=\"1.00\" stroke=\"#000000\" fill=\"none\" "
            "d=\"M5,6 7,8\"/></g></svg>");
}

TEST(Layers, HistogramLevelsAreOneSubpathEach) {
  const QuantizerStats q = sample_report().layers[1].weight.value();
  ASSERT_FALSE(q.levels.empty());
  const std::string svg = apot::report::histogram_svg({"w", "x", q.histogram, q.levels, false});
  EXPECT_EQ(svg.find("<polyline"), std::string::npos);
  // The levels are drawn in the second series colour (#D62728), 1.5 wide, after the bars.
  const size_t at = svg.find("<path stroke-width=\"1.50\" stroke=\"#D62728\"");
  ASSERT_NE(at, std::string::npos) << svg;
  const std::string path = svg.substr(at, svg.find("/>", at) - at);
  EXPECT_EQ(size_t(std::count(path.begin(), path.end(), 'M')), q.levels.size());
}

TEST(Layers, TheRunSectionHasTheTableAndAFigurePerQuantiser) {
  apot::report::Run run;
  run.dir = run.name = "w3";
  run.epochs = {json{{"epoch", 1}, {"test_top1", 50.0}}};
  run.layers = sample_report();
  const std::string html = apot::report::report_html({run});
  EXPECT_NE(html.find("id=\"run0-table\""), std::string::npos);
  EXPECT_NE(html.find("id=\"run0-sqnr\""), std::string::npos);
  EXPECT_NE(html.find("id=\"run0-layer1-weight\""), std::string::npos);
  EXPECT_EQ(html.find("id=\"run0-layer1-input\""), std::string::npos);  // the int8 layer's input is float
  EXPECT_NE(html.find("id=\"run0-layer2-input\""), std::string::npos);
  EXPECT_NE(html.find("<td>layer1.0.conv1</td><td>W3A3 apot</td>"), std::string::npos);
  // An unfinished run takes its configuration from layers.json.
  EXPECT_NE(html.find("<td>w3</td><td>resnet20</td><td>apot</td><td>3/3</td>"), std::string::npos);
  EXPECT_TRUE(apot::report::report_json({run})["runs"][0].contains("layers"));
}

}  // namespace
