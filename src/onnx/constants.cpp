// Constants of an ONNX graph and the folding of constant arithmetic (constants.h).
#include "constants.h"

#include <cmath>
#include <cstring>
#include <stdexcept>

#include "apot/graph/graph.h"

namespace apot::onnx_import::detail {

using graph::GraphError;

// Reads a tensor's elements as doubles; float32/64, float16, int32/64 (shapes, pads, clips).
// A size that does not match the dimensions means a corrupt file.
Const decode(const ::onnx::TensorProto& t, const std::string& source) {
  Const c;
  for (int64_t d : t.dims()) {
    if (d < 0 || d > (int64_t(1) << 31))
      throw std::runtime_error(source + ": tensor '" + t.name() + "' has a bad shape");
    c.dims.push_back(d);
  }
  const int64_t n = c.count();
  if (n > (int64_t(1) << 30)) throw std::runtime_error(source + ": tensor '" + t.name() + "' is too large");
  if (t.data_location() == ::onnx::TensorProto::EXTERNAL)
    throw GraphError(source + ": tensor '" + t.name() +
                     "' keeps its data in an external file, which apot does not read (export without external data)");
  const std::string& raw = t.raw_data();
  auto check = [&](int64_t have) {
    if (have != n)
      throw std::runtime_error(source + ": tensor '" + t.name() + "' has " + std::to_string(have) + " values for " +
                               std::to_string(n) + " elements (a corrupt file)");
  };
  auto check_raw = [&](size_t element_bytes) {
    if (raw.size() != size_t(n) * element_bytes)
      throw std::runtime_error(source + ": tensor '" + t.name() + "' has " + std::to_string(raw.size()) +
                               " bytes of data for " + std::to_string(n) + " elements of " +
                               std::to_string(element_bytes) + " bytes (a corrupt file)");
  };
  // Elements of type T: from the raw bytes, else from the typed field `field`.
  auto read = [&](auto zero, const auto& field) {
    using T = decltype(zero);
    if (raw.empty()) {
      check(field.size());
      c.values.assign(field.begin(), field.end());
      return;
    }
    check_raw(sizeof(T));
    c.values.resize(size_t(n));
    for (int64_t i = 0; i < n; ++i) {
      T v;
      std::memcpy(&v, raw.data() + i * int64_t(sizeof(T)), sizeof(T));
      c.values[size_t(i)] = double(v);
    }
  };
  switch (t.data_type()) {
    case ::onnx::TensorProto::FLOAT: read(float{}, t.float_data()); break;
    case ::onnx::TensorProto::DOUBLE: read(double{}, t.double_data()); break;
    case ::onnx::TensorProto::INT64: read(int64_t{}, t.int64_data()); break;
    case ::onnx::TensorProto::INT32: read(int32_t{}, t.int32_data()); break;
    case ::onnx::TensorProto::FLOAT16: {
      // float16 is stored as raw bytes or in int32_data, one value per element.
      std::vector<uint16_t> bits;
      if (!raw.empty()) {
        check_raw(2);
        bits.resize(size_t(n));
        std::memcpy(bits.data(), raw.data(), size_t(n) * 2);
      } else {
        check(t.int32_data_size());
        for (int32_t v : t.int32_data()) bits.push_back(uint16_t(v));
      }
      for (uint16_t h : bits) {
        const int e = (h >> 10) & 31, m = h & 1023;
        const double s = (h & 0x8000) ? -1.0 : 1.0;
        c.values.push_back(e == 0    ? s * std::ldexp(m, -24)
                           : e == 31 ? (m ? NAN : s * INFINITY)
                                     : s * std::ldexp(1024 + m, e - 25));
      }
      break;
    }
    default: {
      std::string type = ::onnx::TensorProto_DataType_IsValid(t.data_type())
                             ? ::onnx::TensorProto_DataType_Name(::onnx::TensorProto_DataType(t.data_type()))
                             : std::string();
      if (type.empty()) type = std::to_string(t.data_type());
      throw GraphError(source + ": tensor '" + t.name() + "' has element type " + type +
                       ", apot reads float, double, float16, int32 and int64 tensors");
    }
  }
  return c;
}

// ---- constant folding: the shape arithmetic exporters write for Pad's and Reshape's inputs ----

namespace {

std::vector<int64_t> strides_of(const std::vector<int64_t>& dims) {
  std::vector<int64_t> st(dims.size(), 1);
  for (size_t i = dims.size(); i-- > 1;) st[i - 1] = st[i] * dims[i];
  return st;
}

// The element of `x` at the multi-index `at` (row-major).
double element(const Const& x, const std::vector<int64_t>& at) {
  const auto st = strides_of(x.dims);
  int64_t off = 0;
  for (size_t i = 0; i < at.size(); ++i) off += at[i] * st[i];
  return x.values[size_t(off)];
}

// Calls f(index) for every multi-index of `dims` in row-major order.
template <typename F>
void for_each_index(const std::vector<int64_t>& dims, F f) {
  int64_t n = 1;
  for (int64_t d : dims) n *= d;
  std::vector<int64_t> at(dims.size(), 0);
  for (int64_t k = 0; k < n; ++k) {
    f(at);
    for (size_t i = dims.size(); i-- > 0;) {
      if (++at[i] < dims[i]) break;
      at[i] = 0;
    }
  }
}

int64_t axis_of(int64_t axis, size_t rank) {
  const int64_t a = axis < 0 ? axis + int64_t(rank) : axis;
  if (a < 0 || a >= int64_t(std::max<size_t>(rank, 1))) throw std::invalid_argument("axis out of range");
  return a;
}

// ONNX Slice on one axis: the indices it keeps (start, end clamped as the operator says).
std::vector<int64_t> slice_indices(int64_t dim, int64_t start, int64_t end, int64_t step) {
  if (step == 0) throw std::invalid_argument("a zero step");
  // A step beyond the dimension keeps the first element only (and i += step cannot overflow).
  step = std::max<int64_t>(std::min<int64_t>(step, std::max<int64_t>(dim, 1)), -std::max<int64_t>(dim, 1));
  auto clampi = [](int64_t v, int64_t lo, int64_t hi) { return std::min(std::max(v, lo), hi); };
  if (start < 0) start += dim;
  if (end < 0) end += dim;
  std::vector<int64_t> out;
  if (step > 0) {
    start = clampi(start, 0, dim);
    end = clampi(end, 0, dim);
    for (int64_t i = start; i < end; i += step) out.push_back(i);
  } else {
    start = clampi(start, 0, dim - 1);
    end = clampi(end, -1, dim - 1);
    for (int64_t i = start; i > end; i += step) out.push_back(i);
  }
  return out;
}

}  // namespace

// Folds `n` if it is an op of constant arithmetic and all its inputs are constants; nullopt
// otherwise. Throws std::invalid_argument for inputs the op does not accept.
std::optional<Const> fold(const ::onnx::NodeProto& n, const std::vector<const Const*>& in,
                          const std::function<const ::onnx::AttributeProto*(const std::string&)>& attr) {
  const std::string& op = n.op_type();
  auto ints_attr = [&](const std::string& name) {
    std::vector<int64_t> v;
    if (const auto* a = attr(name)) v.assign(a->ints().begin(), a->ints().end());
    return v;
  };
  auto as_ints = [](const Const* c) {
    if (!c) throw std::invalid_argument("a missing input");
    std::vector<int64_t> v;
    for (double x : c->values) {  // INT64_MIN / INT64_MAX (Slice's "to the end") clamp to +-2^62
      if (std::isnan(x)) throw std::invalid_argument("a value that is not a number");
      v.push_back(int64_t(std::clamp(x, -4.6e18, 4.6e18)));
    }
    return v;
  };
  // Inputs left out (nullptr) only where the op allows; every input small (shape arithmetic).
  for (const Const* c : in)
    if (c && (c->count() > (1 << 20) ||
              std::any_of(c->dims.begin(), c->dims.end(), [](int64_t d) { return d > (1 << 20); })))
      return std::nullopt;
  if (in.empty() || !in[0]) return std::nullopt;
  if ((op == "Cast" || op == "Identity") && in.size() == 1) return *in[0];
  if (op == "ConstantOfShape" && in.size() == 1) {
    Const c;
    c.dims = as_ints(in[0]);
    for (int64_t d : c.dims)
      if (d < 0 || d > (1 << 20)) throw std::invalid_argument("a bad shape");
    if (c.count() > (1 << 20)) throw std::invalid_argument("too many values");
    double value = 0;
    if (const auto* a = attr("value"); a && a->has_t()) {
      const Const v = decode(a->t(), "value");
      if (v.values.size() != 1)
        throw std::invalid_argument("a value of " + std::to_string(v.values.size()) + " elements");
      value = v.values[0];
    }
    c.values.assign(size_t(c.count()), value);
    return c;
  }
  if (op == "Reshape" && in.size() == 2) {
    Const c = *in[0];
    std::vector<int64_t> dims = as_ints(in[1]);
    int64_t known = 1, infer = -1;
    for (size_t i = 0; i < dims.size(); ++i) {
      if (dims[i] == 0 && i < in[0]->dims.size()) dims[i] = in[0]->dims[i];
      if (dims[i] == -1) {
        if (infer >= 0) throw std::invalid_argument("two -1 dimensions");
        infer = int64_t(i);
      } else if (dims[i] > 0) {
        known = std::min<int64_t>(known * dims[i], int64_t(1) << 40);
      } else {
        throw std::invalid_argument("a bad shape");
      }
    }
    if (infer >= 0) dims[size_t(infer)] = known > 0 ? int64_t(c.values.size()) / known : 0;
    c.dims = dims;
    if (c.count() != int64_t(c.values.size())) throw std::invalid_argument("the shape does not fit");
    return c;
  }
  if ((op == "Unsqueeze" || op == "Squeeze") && !in.empty()) {
    Const c = *in[0];
    std::vector<int64_t> axes = in.size() > 1 && in[1] ? as_ints(in[1]) : ints_attr("axes");
    if (op == "Unsqueeze") {
      const size_t rank = c.dims.size() + axes.size();
      for (int64_t& a : axes) a = axis_of(a, rank);
      std::sort(axes.begin(), axes.end());
      for (int64_t a : axes) c.dims.insert(c.dims.begin() + std::min<int64_t>(a, int64_t(c.dims.size())), 1);
    } else {
      std::vector<int64_t> dims;
      for (size_t i = 0; i < c.dims.size(); ++i) {
        bool drop = axes.empty() && c.dims[i] == 1;
        for (int64_t a : axes) drop |= axis_of(a, c.dims.size()) == int64_t(i);
        if (!drop) dims.push_back(c.dims[i]);
      }
      c.dims = dims;
    }
    return c;
  }
  if (op == "Concat" && !in.empty()) {
    const auto* a = attr("axis");
    const int64_t axis = axis_of(a ? a->i() : 0, in[0]->dims.size());
    Const c;
    c.dims = in[0]->dims;
    c.dims[size_t(axis)] = 0;
    for (const Const* x : in) {
      if (!x || x->dims.size() != c.dims.size()) throw std::invalid_argument("ranks differ");
      c.dims[size_t(axis)] += x->dims[size_t(axis)];
    }
    c.values.resize(size_t(c.count()));
    const auto st = strides_of(c.dims);
    int64_t offset = 0;
    for (const Const* x : in) {
      for_each_index(x->dims, [&](const std::vector<int64_t>& at) {
        int64_t off = 0;
        for (size_t i = 0; i < at.size(); ++i) off += (at[i] + (int64_t(i) == axis ? offset : 0)) * st[i];
        c.values[size_t(off)] = element(*x, at);
      });
      offset += x->dims[size_t(axis)];
    }
    return c;
  }
  if (op == "Transpose" && in.size() == 1) {
    const Const& x = *in[0];
    std::vector<int64_t> perm = ints_attr("perm");
    if (perm.empty())
      for (size_t i = x.dims.size(); i-- > 0;) perm.push_back(int64_t(i));
    if (perm.size() != x.dims.size()) throw std::invalid_argument("perm does not fit");
    std::vector<bool> seen(perm.size(), false);
    for (int64_t& p : perm) {
      p = axis_of(p, x.dims.size());
      if (seen[size_t(p)]) throw std::invalid_argument("perm is not a permutation");
      seen[size_t(p)] = true;
    }
    Const c;
    for (int64_t p : perm) c.dims.push_back(x.dims.at(size_t(axis_of(p, x.dims.size()))));
    c.values.reserve(x.values.size());
    for_each_index(c.dims, [&](const std::vector<int64_t>& at) {
      std::vector<int64_t> src(at.size());
      for (size_t i = 0; i < at.size(); ++i) src[size_t(perm[i])] = at[i];
      c.values.push_back(element(x, src));
    });
    return c;
  }
  if (op == "Slice" && in.size() >= 3) {
    const Const& x = *in[0];
    const auto starts = as_ints(in[1]), ends = as_ints(in[2]);
    std::vector<int64_t> axes = in.size() > 3 && in[3] ? as_ints(in[3]) : std::vector<int64_t>{};
    std::vector<int64_t> steps = in.size() > 4 && in[4] ? as_ints(in[4]) : std::vector<int64_t>{};
    if (axes.empty())
      for (size_t i = 0; i < starts.size(); ++i) axes.push_back(int64_t(i));
    if (steps.empty()) steps.assign(starts.size(), 1);
    if (ends.size() != starts.size() || axes.size() != starts.size() || steps.size() != starts.size())
      throw std::invalid_argument("starts, ends, axes and steps differ in length");
    std::vector<std::vector<int64_t>> keep(x.dims.size());
    for (size_t i = 0; i < x.dims.size(); ++i)
      for (int64_t k = 0; k < x.dims[i]; ++k) keep[i].push_back(k);
    for (size_t k = 0; k < starts.size(); ++k) {
      const auto a = size_t(axis_of(axes[k], x.dims.size()));
      keep[a] = slice_indices(x.dims[a], starts[k], ends[k], steps[k]);
    }
    Const c;
    for (const auto& k : keep) c.dims.push_back(int64_t(k.size()));
    for_each_index(c.dims, [&](const std::vector<int64_t>& at) {
      std::vector<int64_t> src(at.size());
      for (size_t i = 0; i < at.size(); ++i) src[i] = keep[i][size_t(at[i])];
      c.values.push_back(element(x, src));
    });
    return c;
  }
  if (op == "Gather" && in.size() == 2 && in[1]) {
    const Const& x = *in[0];
    const Const& idx = *in[1];
    const auto* a = attr("axis");
    if (x.dims.size() != 1 || (a && a->i() != 0)) return std::nullopt;
    Const c;
    c.dims = idx.dims;
    for (double i : idx.values) {
      const int64_t k = int64_t(i) < 0 ? int64_t(i) + x.dims[0] : int64_t(i);
      if (k < 0 || k >= x.dims[0]) throw std::invalid_argument("an index out of range");
      c.values.push_back(x.values[size_t(k)]);
    }
    return c;
  }
  return std::nullopt;
}

std::string dims_str(const std::vector<int64_t>& dims) {
  std::string s;
  for (int64_t d : dims) s += (s.empty() ? "" : " x ") + std::to_string(d);
  return s.empty() ? "a scalar" : s;
}

}  // namespace apot::onnx_import::detail
