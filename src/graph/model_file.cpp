// The TOML model-file reader (docs/MODELS.md): toml++ turns the file into JSON, which becomes a
// graph as graph_from_json reads it (serialize.cpp). Kept apart from the JSON side so that the
// installable runtime, which reads graphs from .apot files only, does not need toml++.
#include <toml++/toml.h>
#include <utf8cpp/utf8.h>

#include <cstdio>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "apot/graph/serialize.h"

namespace apot::graph {

using detail::fail;
using nlohmann::json;
// toml++ 3.3 is unsafe on some text: it asserts on a table header that starts with a control
// character, and reaches __builtin_unreachable when it asks whether a character from U+00A1 to
// U+0499 or U+FC06 to U+FEFE is whitespace, which it does in more places than one can list
// (after a bare word such as `2"`, after a backslash in a multi-line string...; found by
// fuzz_model_file). So it is given ASCII text only: non-ASCII characters in strings become
// escapes (\uXXXX, \UXXXXXXXX; literal strings are written as basic strings for that), those in
// comments become '?', and anything else TOML does not allow there is refused with one line.
// Lines stay where they were, so toml++'s line numbers hold.
namespace {
[[noreturn]] void refuse(const std::string& source, int line, const std::string& what) {
  throw GraphError(source + ":" + std::to_string(line) + ": " + what);
}

// The code point of the UTF-8 sequence at text[i] (utf8cpp checks it), as a TOML escape; i
// moves to its last byte.
std::string escape_of(const std::string& text, size_t& i, const std::string& source, int line) {
  auto it = text.begin() + static_cast<ptrdiff_t>(i);
  uint32_t cp = 0;
  try {
    cp = utf8::next(it, text.end());
  } catch (const utf8::exception&) {
    refuse(source, line, "not UTF-8 text");
  }
  i = static_cast<size_t>(it - text.begin()) - 1;
  char escape[12];
  std::snprintf(escape, sizeof escape, cp <= 0xffff ? "\\u%04X" : "\\U%08X", static_cast<unsigned>(cp));
  return escape;
}
}  // namespace

std::string ascii_toml(const std::string& text, const std::string& source) {
  std::string out;
  out.reserve(text.size());
  int line = 1;
  char quote = 0;        // inside a string: its delimiter (" or ')
  bool multi = false;    // ... a multi-line one (""" or ''')
  bool escaped = false;  // ... the character after a backslash in a basic string
  bool comment = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    const unsigned char u = static_cast<unsigned char>(c);
    if ((u < 0x20 && c != '\t' && c != '\n' && c != '\r') || u == 0x7f)
      refuse(source, line, "a control character (byte " + std::to_string(u) + ") is not allowed in TOML");
    if (comment && c != '\n') {
      out += u < 0x80 ? c : '?';
      continue;
    }
    if (u >= 0x80) {
      if (!quote) refuse(source, line, "a non-ASCII character outside a string or comment is not allowed in TOML");
      if (escaped) refuse(source, line, "a backslash followed by a non-ASCII character is not a TOML escape");
      out += escape_of(text, i, source, line);
      continue;
    }
    if (c == '\n') {
      ++line;
      comment = false;
      if (!multi) quote = 0;  // an unterminated single-line string: toml++ reports it
    }
    if (escaped) {
      escaped = false;
    } else if (quote == '"' && c == '\\') {
      escaped = true;
    } else if (quote && c == quote) {
      size_t run = 1;  // the quotes in a row from here
      while (i + run < text.size() && text[i + run] == quote) ++run;
      if (!multi || run >= 3) {
        // A multi-line string ends with its last three quotes; up to two more belong to it.
        if (multi && run > 5) refuse(source, line, "more than five quotes in a row end a multi-line string");
        const size_t inside = multi ? run - 3 : 0;
        out.append(inside, quote);
        out += multi ? "\"\"\"" : "\"";
        i += inside + (multi ? 2 : 0);
        quote = 0;
        multi = false;
        continue;
      }
      out.append(run, quote);  // one or two inside
      i += run - 1;
      continue;
    } else if (quote == '\'' && (c == '\\' || c == '"')) {
      out += '\\';  // literal text in a basic string
    } else if (!quote && c == '#') {
      comment = true;
    } else if (!quote && (c == '"' || c == '\'')) {
      quote = c;
      multi = text.compare(i, 3, std::string(3, c)) == 0;
      out += multi ? "\"\"\"" : "\"";
      if (multi) i += 2;
      continue;
    }
    out += c;
  }
  return out;
}

Graph model_from_toml_text(const std::string& text, const std::string& source) {
  const std::string ascii = ascii_toml(text, source);
  json doc;
  try {
    const toml::table table = toml::parse(ascii, source);
    std::ostringstream out;
    out << toml::json_formatter(table);
    doc = json::parse(out.str());
  } catch (const toml::parse_error& e) {
    std::ostringstream msg;
    msg << source << ":" << e.source().begin.line << ": " << e.description();
    throw GraphError(msg.str());
  }
  for (const auto& item : doc.items())
    if (item.key() != "name" && item.key() != "input" && item.key() != "layer")
      throw GraphError(source + ": unknown key '" + item.key() + "' (expected name, [input], [[layer]])");
  if (!doc.contains("input") || !doc.at("input").is_object() || !doc.at("input").contains("channels"))
    throw GraphError(source + ": needs [input] with channels");
  if (!doc.contains("layer") || !doc.at("layer").is_array() || doc.at("layer").empty())
    throw GraphError(source + ": needs at least one [[layer]]");
  const json& layers = doc.at("layer");
  if (layers.size() > 100000) throw GraphError(source + ": too many layers");
  // Names first, so that layers may read layers defined further down; then a depth-first
  // topological sort that reports the first cycle it finds.
  std::map<std::string, size_t> position;
  for (size_t i = 0; i < layers.size(); ++i) {
    if (!layers[i].is_object() || !layers[i].contains("name") || !layers[i].at("name").is_string())
      throw GraphError(source + ": layer " + std::to_string(i + 1) + " has no name");
    const std::string name = layers[i].at("name").get<std::string>();
    if (name == "input") throw GraphError(source + ": node 'input': the name is reserved for the image");
    if (!position.emplace(name, i).second) fail(source, name, "the name is used twice");
  }
  std::vector<std::vector<std::string>> reads(layers.size());
  for (size_t i = 0; i < layers.size(); ++i) {
    const json& l = layers[i];
    const std::string name = l.at("name").get<std::string>();
    try {
      if (l.contains("input")) reads[i].push_back(l.at("input").get<std::string>());
      if (l.contains("inputs")) {
        const auto more = l.at("inputs").get<std::vector<std::string>>();
        reads[i].insert(reads[i].end(), more.begin(), more.end());
      }
    } catch (const json::exception&) {
      fail(source, name, "input must be a layer name, inputs a list of layer names");
    }
    if (!l.contains("input") && !l.contains("inputs"))
      reads[i].push_back(i == 0 ? "input" : layers[i - 1].at("name").get<std::string>());
    for (const std::string& r : reads[i])
      if (r != "input" && !position.count(r)) fail(source, name, "reads '" + r + "', which is not a layer");
  }
  std::vector<int> state(layers.size(), 0);  // 0 new, 1 on the path, 2 done
  std::vector<size_t> order;
  std::vector<std::string> path;
  std::function<void(size_t)> visit = [&](size_t i) {
    const std::string name = layers[i].at("name").get<std::string>();
    if (state[i] == 2) return;
    if (state[i] == 1) {
      std::string cycle;
      for (auto it = std::find(path.begin(), path.end(), name); it != path.end(); ++it) cycle += *it + " -> ";
      fail(source, name, "is part of a cycle (" + cycle + name + ")");
    }
    if (path.size() > 10000) fail(source, name, "the network is too deep");
    state[i] = 1;
    path.push_back(name);
    for (const std::string& r : reads[i])
      if (r != "input") visit(position.at(r));
    path.pop_back();
    state[i] = 2;
    order.push_back(i);
  };
  for (size_t i = 0; i < layers.size(); ++i) visit(i);
  json nodes = json::array();
  json input = doc.at("input");
  input["name"] = "input";
  input["op"] = "input";
  nodes.push_back(input);
  for (size_t i : order) {
    json l = layers[i];
    l.erase("input");
    l["inputs"] = reads[i];
    if (l.contains("quant"))
      fail(source, l.at("name").get<std::string>(),
           "quantisation comes from the recipe ([quant], [quant.layers]), not the model file");
    nodes.push_back(l);
  }
  Graph g = graph_from_json(json{{"arch", doc.value("name", std::string("model"))}, {"nodes", nodes}}, source);
  const auto consumers = g.consumers();
  for (size_t i = 1; i + 1 < g.size(); ++i)
    if (consumers[i].empty())
      throw GraphError(source + ": node '" + g[i].name + "': its output is never used (the last layer is the output)");
  return g;
}

Graph read_model_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw GraphError(path + ": cannot open the model file");
  std::stringstream text;
  text << in.rdbuf();
  return model_from_toml_text(text.str(), path);
}

}  // namespace apot::graph
