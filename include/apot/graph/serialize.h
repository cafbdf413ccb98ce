// Graphs as JSON (inside .apot files and checkpoints) and the model file, a TOML description of
// a user's own network (docs/MODELS.md). Both readers validate every node and name the node
// and the problem in their one-line errors.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "apot/graph/graph.h"

namespace apot::graph {

// {"arch": ..., "nodes": [{"name", "op", "inputs": [names], attributes..., "quant": {...}}]}.
// Shapes are not stored: infer_shapes recomputes them.
nlohmann::json graph_to_json(const Graph& graph);
// Nodes must come in topological order (as graph_to_json writes them); the input node's
// "channels" gives the input channels. `source` prefixes errors.
Graph graph_from_json(const nlohmann::json& json, const std::string& source);

// A model file: TOML with `name`, `[input] channels`, and `[[layer]]` tables (name, op, input /
// inputs, attributes); layers may come in any order (they are sorted; a cycle is an error),
// and a layer without `input` reads the layer before it in the file.
Graph read_model_file(const std::string& path);

// The TOML text as toml++ 3.3 can read it safely, ASCII only (model_file.cpp says why): for
// every TOML text apot reads (model files, recipes, --set values). Non-ASCII characters in
// strings become escapes, those in comments '?'; throws GraphError("SOURCE:LINE: ...") for a
// control character, a non-ASCII character outside strings and comments, or text not UTF-8.
std::string ascii_toml(const std::string& text, const std::string& source);
Graph model_from_toml_text(const std::string& text, const std::string& source);

namespace detail {
// Throws GraphError("SOURCE: node 'NODE': WHAT"): the readers' one error form.
[[noreturn]] void fail(const std::string& source, const std::string& node, const std::string& what);
}  // namespace detail

}  // namespace apot::graph
