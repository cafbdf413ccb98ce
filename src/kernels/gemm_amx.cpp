// AMX convolution (Intel AMX-INT8: tdpbusd on 16 x 64-byte tiles; Sapphire Rapids and later):
// the same implicit GEMM as the AVX-512 VNNI kernel, a block of 32 output pixels x 32 output
// channels per step in four int32 accumulator tiles, then the AVX-512 epilogue
// (avx512_epilogue.h) on the stored accumulators. The integer sums are exact, so the bits are
// those of every other path.
//
// The K dimension: the weights' rows are ordered (ky, kx, c), and for one kernel row ky the
// kernel * cs input bytes of a pixel (taps (ky, 0..kernel-1)) lie one after the other in the
// NHWC image. Each kernel row is cut into 64-byte chunks; the A tile of a chunk is 16 pixels x
// those 64 bytes (row stride: stride * cs bytes), its B tile 16 rows of 4 K values x 16 output
// channels: exactly PackedConv's layout where kernel * cs is a multiple of 64, and
// PackedConv::amx (zero rows past the chunk's end) otherwise. A tile row of a shorter chunk
// reads bytes past it, which the zero rows cancel.
//
// At stride 1, the pixels of a tile run on over the ends of output rows: consecutive pixels of
// the padded input are cs bytes apart across rows too, so a tile holds pixel (y, x) at row
// y * padded_w + x, and the rows that land on the border columns are computed and dropped.
// That keeps tiles full on 7- and 14-wide maps. At other strides a tile stays in one row (two
// rows to a block where they are at most 16 wide). The last tiles read past the last pixel:
// into CodeImage::capacity where the caller left room, else those pixels take the VNNI kernel.
#include <immintrin.h>

#include <utility>
#include <vector>

#include "avx512_epilogue.h"

namespace apot::kernels::detail {
namespace {

struct alignas(64) TileConfig {
  uint8_t palette = 1, start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

// tmm0-3: accumulators (pixels 0-15 / 16-31 x blocks nb / nb + 1), tmm4-5: A, tmm6-7: B.
void configure_tiles() {
  TileConfig c;
  for (int t = 0; t < 8; ++t) {
    c.rows[t] = 16;
    c.colsb[t] = 64;
  }
  _tile_loadconfig(&c);
}

// One chunk of K: its A bytes from a pixel's tap (0, 0) input, its B tile for block 0.
struct Chunk {
  ptrdiff_t a_offset;
  const int8_t* b;
};

struct Layout {
  std::array<Chunk, 512> chunks;  // kernel rows x 64-byte pieces (more: the VNNI kernel runs)
  int n = 0;
  size_t b_block = 0;  // bytes from one block of 16 output channels' B tiles to the next
};

bool make_layout(const ConvArgs& a, Layout& l) {
  const PackedConv& w = *a.w;
  const int row_bytes = w.kernel * w.cs, pieces = (row_bytes + 63) / 64;
  if (w.kernel * pieces > int(l.chunks.size())) return false;
  const bool exact = row_bytes % 64 == 0;
  if (!exact && w.amx.empty()) return false;
  const int8_t* b = exact ? w.data.data() : w.amx.data();
  l.b_block = exact ? size_t(w.K() / 4) * 64 : size_t(w.kernel * pieces) * 1024;
  for (int ky = 0; ky < w.kernel; ++ky)
    for (int j = 0; j < pieces; ++j) {
      l.chunks[size_t(l.n)] = {a.tap_offsets[size_t(ky * w.kernel)] + 64 * j, b};
      b += 1024;  // 16 rows of 4 K values x 16 channels
      ++l.n;
    }
  return true;
}

// The accumulators of 32 pixels x 2 blocks: pixel i of block j in row 32 j + i, and 7 rows
// more, so that a piece's 8 rows are read from row 32 j + i without a bound (rows past the
// piece's count are read and left out; a clamp to the block's last row cost a compare and a
// branch per row).
struct alignas(64) Sums {
  int32_t v[64 + 7][16];
};

// One call of the epilogue: up to 8 consecutive pixels (y, x ..) of one output row, from rows
// i .. of block j's sums.
struct Piece {
  int j, i, count, y, x;
};

// The pieces of a block of tile rows [v, v + rows), v = y0 * vw + x0 (tile row v = y * vw + x,
// real where x < ow).
struct Pieces {
  std::array<Piece, 64> p;  // 2 blocks x at most 32 rows
  int n = 0;
  void make(int y0, int x0, int rows, int vw, int ow, int blocks) {
    n = 0;
    for (int j = 0; j < blocks; ++j)
      for (int i = 0, y = y0, x = x0; i < rows;) {
        if (x >= ow) {  // the border columns to the row's end (none where vw == ow)
          i += vw - x;
          x = 0;
          ++y;
          continue;
        }
        const int count = std::min({8, rows - i, ow - x});
        p[size_t(n++)] = {j, i, count, y, x};
        i += count;
        x += count;
      }
  }
};

// The epilogue of one piece, for one of the epilogue's shapes (S: Epilogue::straight; Full:
// every block of 16 output channels whole). The kernel is instantiated per shape with its own
// copy of the epilogue, inlined into the tile loop: the requantiser's vectors stay in registers,
// where a call per piece loaded them again and chose its shape each time, and whole blocks take
// no masks and no subtraction without an offset (Off; with the epilogue's copy of ConvOutput:
// 56x56 3x3 64->64 0.83-0.87x the time, 14x14 1x1 64->384 0.80x, one harness, same bits).
template <Epilogue::Straight S, bool Full, Epilogue::Offsets Off = Epilogue::Offsets::any>
struct Finish {
  const Epilogue e;
  const ConvArgs& a;
  __attribute__((always_inline)) void operator()(const Sums& s, const Piece& p, int nb) const {
    const int n0 = (nb + p.j) * 16;
    __m512i acc[8];
    const int32_t(*rows)[16] = s.v + 32 * p.j + p.i;
    for (int r = 0; r < 8; ++r) acc[r] = _mm512_load_si512(rows[r]);
    const int at = p.y * a.ow + p.x;
    const __mmask16 mask = Full ? __mmask16(0xffff) : lane_mask(a.w->out_channels - n0);
    if constexpr (S == Epilogue::Straight::codes) e.straight_row<false, 8, Off>(acc, at, p.y, p.x, n0, mask, p.count);
    else if constexpr (S == Epilogue::Straight::residual_codes)
      e.straight_row<true, 8, Off>(acc, at, p.y, p.x, n0, mask, p.count);
    else e.row<8>(acc, at, p.y, p.x, n0, mask, p.count);
  }
};

// 32 pixels (rows 0-15 from a0, 16-31 from a1, `step` bytes apart) x blocks (nb, nb + 1; only
// nb where b_block is 0) into the accumulator tiles, and the epilogue pieces `todo` of the
// block before (from `before`), one after each chunk: the AMX unit and the vector units then
// work side by side (run one after the other, the epilogue of a 56x56 layer took as long as
// its tiles).
template <class F>
__attribute__((always_inline)) inline void block32(const F& finish, const Layout& l, const uint8_t* a0,
                                                   const uint8_t* a1, size_t step, int nb, size_t b_block,
                                                   const Pieces& todo, const Sums& before) {
  const int8_t* b0 = l.chunks[0].b + size_t(nb) * l.b_block;
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  int next = 0;
  for (int i = 0; i < l.n; ++i) {
    const Chunk& c = l.chunks[size_t(i)];
    const int8_t* b = b0 + (c.b - l.chunks[0].b);
    _tile_loadd(4, a0 + c.a_offset, step);
    _tile_loadd(6, b, 64);
    _tile_dpbusd(0, 4, 6);
    _tile_loadd(5, a1 + c.a_offset, step);
    _tile_dpbusd(2, 5, 6);
    if (b_block) {
      _tile_loadd(7, b + b_block, 64);
      _tile_dpbusd(1, 4, 7);
      _tile_dpbusd(3, 5, 7);
    }
    if (next < todo.n) finish(before, todo.p[size_t(next++)], nb);
  }
  for (; next < todo.n; ++next) finish(before, todo.p[size_t(next)], nb);
}

inline void store(Sums& s, int blocks) {
  _tile_stored(0, s.v[0], 64);
  _tile_stored(2, s.v[16], 64);
  if (blocks < 2) return;
  _tile_stored(1, s.v[32], 64);
  _tile_stored(3, s.v[48], 64);
}

// The kernel for one epilogue shape: `finish` runs one piece (Finish<S>).
template <class F>
void run(const ConvArgs& a, int m0, int m1, const Layout& l, const F& finish) {
  const PackedConv& w = *a.w;
  const CodeImage& in = *a.in;
  const int s = w.stride, pw = in.padded_w();
  const size_t step = size_t(s) * in.cs;
  // Pixel (y, x) is tile row v = y * vw + x: vw = padded_w at stride 1 (tiles cross rows); at
  // other strides 16 where rows are at most 16 wide and the range starts a row (a block's two A
  // tiles hold two rows; ResNet-18's 3x3 / 2 layers to 14 and 7 columns), else ow (each row on
  // its own).
  const bool across = s == 1, pairs = !across && a.ow <= 16 && m0 % a.ow == 0;
  const int vw = across ? pw : pairs ? 16 : a.ow;
  const uint8_t* const origin = a.base(0, 0);
  const uint8_t* const end = in.data + std::max(in.bytes(), in.capacity);
  const ptrdiff_t reach = l.chunks[size_t(l.n - 1)].a_offset + 64;  // bytes a tile row reads from its tap (0, 0)
  auto address = [&](int v) { return origin + size_t(v / vw) * size_t(s) * pw * in.cs + size_t(v % vw) * step; };
  ConvArgs rest = a;  // the VNNI kernel for pixels whose tile would read past the image
  rest.amx = false;
  configure_tiles();
  // Software pipelined: the tiles of one block are computed while the epilogue of the block
  // before runs from the other Sums.
  Sums sums[2];
  Pieces todo;
  for (int nb = a.nb0; nb < a.nb1; nb += 2) {
    const int blocks = std::min(2, a.nb1 - nb);
    int current = 0;
    todo.n = 0;
    auto flush = [&] {
      for (int i = 0; i < todo.n; ++i) finish(sums[current ^ 1], todo.p[size_t(i)], nb);
      todo.n = 0;
    };
    // Segments of tile rows: the whole range at stride 1 and for row pairs, else one output row each.
    for (int m = m0; m < m1;) {
      const int y0 = m / a.ow, x0 = m % a.ow;
      const int seg_end_m = across || pairs ? m1 : std::min(m1, (y0 + 1) * a.ow);
      const int y1 = (seg_end_m - 1) / a.ow, x1 = (seg_end_m - 1) % a.ow;
      const int v0 = y0 * vw + x0, v1 = y1 * vw + x1 + 1;
      // (vy, vx): tile row v's place, kept as v steps (no division per block).
      for (int v = v0, vy = v0 / vw, vx = v0 % vw; v < v1; v += 32) {
        const uint8_t* a0 = across ? origin + size_t(v) * step : address(v);
        const uint8_t* a1 = !pairs ? a0 + 16 * step : v + 16 < v1 ? address(v + 16) : a0;
        if (a1 + 15 * step + reach > end) {  // past the image: the VNNI kernel for the rest
          flush();
          ConvArgs part = rest;
          part.nb0 = nb;
          part.nb1 = nb + blocks;
          const int mv = (v / vw) * a.ow + std::min(v % vw, a.ow);
          conv_rows_avx512_vnni(part, std::max(m, mv), seg_end_m);
          break;
        }
        // With one block left (16 output channels), half the tiles: b_block 0.
        block32(finish, l, a0, a1, step, nb, blocks == 2 ? l.b_block : 0, todo, sums[current ^ 1]);
        store(sums[current], blocks);
        todo.make(vy, vx, std::min(32, v1 - v), vw, a.ow, blocks);
        current ^= 1;
        for (vx += 32; vx >= vw; vx -= vw) ++vy;
      }
      m = seg_end_m;
    }
    flush();
  }
  _tile_release();
}

}  // namespace

bool conv_rows_amx(const ConvArgs& a, int m0, int m1) {
  if (a.w->depthwise() || m0 >= m1) return false;
  Layout l;
  if (!make_layout(a, l)) return false;
  const Epilogue e(*a.out, a.w->out_channels);
  using S = Epilogue::Straight;
  using O = Epilogue::Offsets;
  // A straight shape on whole blocks, with or without the offset.
  auto straight = [&]<S Shape>() {
    if (a.out->acc_offset) run(a, m0, m1, l, Finish<Shape, true, O::some>{e, a});
    else run(a, m0, m1, l, Finish<Shape, true, O::none>{e, a});
  };
  const bool full = a.w->out_channels % 16 == 0;
  if (full && e.straight == S::codes) straight.operator()<S::codes>();
  else if (full && e.straight == S::residual_codes) straight.operator()<S::residual_codes>();
  else run(a, m0, m1, l, Finish<S::no, false>{e, a});
  return true;
}

// The first layer on pixels (conv_stem_u8) on AMX tiles, for kernels of at most 8 x 8. For one
// output row, the C planar input channels are restacked: column X of channel c holds the 8 input
// rows from the row under tap (0, 0) down, one byte each (rows past the kernel repeat its last
// row; their weights are zero). Output pixel x then reads its whole window as the 64 bytes at
// column stride * x: 8 columns x 8 rows, K value k = kx * 8 + ky (PackedStem::amx), one A tile
// row, the tile's rows stride * 8 bytes apart. The integer sums A_c need one accumulator tile per
// channel (the pixel scales a_c differ), so a step computes 16 pixels x NB blocks of 16 output
// channels x C channels in C * NB <= 6 tiles (tmm0-5; tmm6: A, tmm7: B), then the epilogue of
// stem_reference's rounding on the stored sums, while the next step's tiles are computed.
namespace {

template <int N, class F>
__attribute__((always_inline)) inline void unroll(F&& f) {
  [&]<int... I>(std::integer_sequence<int, I...>) { (f(std::integral_constant<int, I>{}), ...); }
  (std::make_integer_sequence<int, N>{});
}

// Columns [x0, x1) (x0 a multiple of 64) of 8 rows, column X at rows[i][X] (0 where X >= limit),
// into out[X * 8 + i]: 64 columns per step, an 8 x 8 byte transpose in three rounds of unpacks
// (16-byte lanes then hold two whole columns) and a 4 x 4 transpose of the lanes.
void stack_rows(const uint8_t* const rows[8], int x0, int x1, int limit, uint8_t* out) {
  for (int x = x0; x < x1; x += 64) {
    const int left = limit - x;
    const __mmask64 mask = left >= 64 ? ~__mmask64(0) : left <= 0 ? 0 : (__mmask64(1) << left) - 1;
    __m512i r[8], p[8], q[8], o[8];
    for (int i = 0; i < 8; ++i) r[i] = _mm512_maskz_loadu_epi8(mask, rows[i] + x);
    for (int i = 0; i < 4; ++i) {  // 16-bit elements: one column, rows (2i, 2i + 1); lanes' columns 0-7 / 8-15
      p[i] = _mm512_unpacklo_epi8(r[2 * i], r[2 * i + 1]);
      p[4 + i] = _mm512_unpackhi_epi8(r[2 * i], r[2 * i + 1]);
    }
    for (int h = 0; h < 2; ++h)  // 32-bit elements: rows 0-3 / 4-7; columns 8h + 0-3 / 8h + 4-7
      for (int g = 0; g < 2; ++g) {
        const int i = 4 * h;
        q[4 * h + 2 * g] = g ? _mm512_unpackhi_epi16(p[i], p[i + 1]) : _mm512_unpacklo_epi16(p[i], p[i + 1]);
        q[4 * h + 2 * g + 1] =
            g ? _mm512_unpackhi_epi16(p[i + 2], p[i + 3]) : _mm512_unpacklo_epi16(p[i + 2], p[i + 3]);
      }
    // o[k], k = 4h + 2g + u: in lane L, columns 16L + 2k and 16L + 2k + 1, 8 rows each.
    for (int hg = 0; hg < 4; ++hg) {
      o[2 * hg] = _mm512_unpacklo_epi32(q[2 * hg], q[2 * hg + 1]);
      o[2 * hg + 1] = _mm512_unpackhi_epi32(q[2 * hg], q[2 * hg + 1]);
    }
    // 64-byte line z of the output = lanes z / 2 of o[4 (z % 2) + 0..3].
    for (int half = 0; half < 2; ++half) {
      const __m512i* v = o + 4 * half;
      const __m512i t0 = _mm512_shuffle_i64x2(v[0], v[1], 0x44), t1 = _mm512_shuffle_i64x2(v[2], v[3], 0x44);
      const __m512i t2 = _mm512_shuffle_i64x2(v[0], v[1], 0xEE), t3 = _mm512_shuffle_i64x2(v[2], v[3], 0xEE);
      uint8_t* dst = out + size_t(x) * 8 + 64 * half;
      _mm512_store_si512(dst, _mm512_shuffle_i64x2(t0, t1, 0x88));
      _mm512_store_si512(dst + 128, _mm512_shuffle_i64x2(t0, t1, 0xDD));
      _mm512_store_si512(dst + 256, _mm512_shuffle_i64x2(t2, t3, 0x88));
      _mm512_store_si512(dst + 384, _mm512_shuffle_i64x2(t2, t3, 0xDD));
    }
  }
}

// Accumulator tile t (0-5) by number: the intrinsics take the tile's name as a literal.
// Called with constants, the switch folds away.
__attribute__((always_inline)) inline void zero_tile(int t) {
  switch (t) {
    case 0: _tile_zero(0); break;
    case 1: _tile_zero(1); break;
    case 2: _tile_zero(2); break;
    case 3: _tile_zero(3); break;
    case 4: _tile_zero(4); break;
    default: _tile_zero(5); break;
  }
}
__attribute__((always_inline)) inline void multiply_tile(int t) {  // tmm_t += tmm6 (A) x tmm7 (B)
  switch (t) {
    case 0: _tile_dpbusd(0, 6, 7); break;
    case 1: _tile_dpbusd(1, 6, 7); break;
    case 2: _tile_dpbusd(2, 6, 7); break;
    case 3: _tile_dpbusd(3, 6, 7); break;
    case 4: _tile_dpbusd(4, 6, 7); break;
    default: _tile_dpbusd(5, 6, 7); break;
  }
}
__attribute__((always_inline)) inline void store_tile(int t, void* p) {
  switch (t) {
    case 0: _tile_stored(0, p, 64); break;
    case 1: _tile_stored(1, p, 64); break;
    case 2: _tile_stored(2, p, 64); break;
    case 3: _tile_stored(3, p, 64); break;
    case 4: _tile_stored(4, p, 64); break;
    default: _tile_stored(5, p, 64); break;
  }
}

template <int C, int NB>
struct alignas(64) StemSums {
  int32_t v[C][NB][16][16];
};

// A step's place: output pixels (y, x .. x + count - 1), pixel index m, blocks nb .. nb + blocks - 1.
struct StemStep {
  int y, x, count, m, nb, blocks;
};

// The epilogue of a step's pixels [r0, min(r1, count)): stem_reference's rounding.
template <int C, int NB>
struct StemEpilogue {
  const StemArgs& a;
  __m512 pixel_scale[C];
  explicit StemEpilogue(const StemArgs& args) : a(args) {
    for (int c = 0; c < C; ++c) pixel_scale[c] = _mm512_set1_ps(a.w->pixel_scale[size_t(c)]);
  }
  __attribute__((always_inline)) void operator()(const StemSums<C, NB>& s, const StemStep& t, int r0, int r1) const {
    const int N = a.w->out_channels;
    __m512 scale[NB], bias[NB];
    __mmask16 mask[NB];
    for (int j = 0; j < t.blocks; ++j) {
      const int n0 = (t.nb + j) * 16;
      mask[j] = lane_mask(N - n0);
      scale[j] = _mm512_maskz_loadu_ps(mask[j], a.scale + n0);
      bias[j] = _mm512_maskz_loadu_ps(mask[j], a.bias + n0);
    }
    r1 = std::min(r1, t.count);
    const float* row_d = a.w->offset.data() + a.w->row_offset[size_t(t.y)] + t.nb * 16;
    const int* col_offset = a.w->col_offset.data() + t.x;
    float* dst = a.out + size_t(t.m - a.m_base + r0) * N + t.nb * 16;
    for (int r = r0; r < r1; ++r, dst += N) {
      const float* d = row_d + col_offset[r];
      for (int j = 0; j < NB; ++j) {
        if (j >= t.blocks) break;
        __m512 sum = _mm512_mul_ps(pixel_scale[0], _mm512_cvtepi32_ps(_mm512_load_si512(s.v[0][j][r])));
        for (int c = 1; c < C; ++c)
          sum = _mm512_add_ps(sum, _mm512_mul_ps(pixel_scale[c], _mm512_cvtepi32_ps(_mm512_load_si512(s.v[c][j][r]))));
        __m512 v = _mm512_add_ps(_mm512_mul_ps(scale[j], _mm512_sub_ps(sum, _mm512_loadu_ps(d + 16 * j))), bias[j]);
        if (a.relu) v = _mm512_max_ps(_mm512_setzero_ps(), v);
        _mm512_mask_storeu_ps(dst + 16 * j, mask[j], v);
      }
    }
  }
};

template <int C, int NB>
void stem_amx(const StemArgs& a, int m0, int m1) {
  static_assert(C * NB <= 6, "tmm0-5 hold the accumulators");
  const PackedStem& w = *a.w;
  const PixelImage& in = *a.in;
  const int s = w.stride, pw = in.padded_w(), K = w.kernel;
  // The stacked columns a row's tiles read: below stride * (x + 15) + 8 for a tile's first pixel
  // x < ow, in whole 64-column pieces.
  const int columns = (s * (a.ow + 15) + 8 + 63) / 64 * 64;
  const size_t per_channel = size_t(columns) * 8;
  thread_local std::vector<uint8_t, Aligned64<uint8_t>> stacked;
  if (stacked.size() < C * per_channel) stacked.assign(C * per_channel, 0);
  configure_tiles();
  const StemEpilogue<C, NB> epilogue(a);
  // Software pipelined: a step's tiles are computed while the epilogue of the step before runs
  // from the other Sums. (Measured on ResNet-18's stem: two sets of accumulator tiles with one
  // block per step, or the epilogue two steps behind, or in six pieces, were all slower.)
  StemSums<C, NB> sums[2];
  StemStep before{};
  bool pending = false;
  int current = 0;
  for (int m = m0; m < m1;) {
    const int y = m / a.ow, x0 = m % a.ow, x1 = std::min(a.ow, x0 + (m1 - m));
    const int first = s * x0 / 64 * 64, last = s * (x0 + (x1 - x0 + 15) / 16 * 16 - 1) + 8;
    for (int c = 0; c < C; ++c) {
      const uint8_t* rows[8];
      const uint8_t* top = in.data + c * in.plane() + size_t(y * s + a.offset) * pw + a.offset;
      for (int i = 0; i < 8; ++i) rows[i] = top + size_t(std::min(i, K - 1)) * pw;
      stack_rows(rows, first, last, pw - a.offset, stacked.data() + c * per_channel);
    }
    for (int nb = 0; nb < w.nblocks; nb += NB) {
      const int blocks = std::min(NB, w.nblocks - nb);
      const int8_t* b = w.amx.data() + size_t(nb) * C * 1024;
      for (int x = x0; x < x1; x += 16) {
        unroll<C * NB>([&](auto t) { zero_tile(t); });
        // The epilogue of the step before in C pieces, one after each channel's products: the
        // AMX unit and the vector units then work side by side (0.85x the time of the whole
        // epilogue after the products).
        unroll<C>([&](auto c) {
          _tile_loadd(6, stacked.data() + c * per_channel + size_t(s) * x * 8, s * 8);
          unroll<NB>([&](auto j) {
            if (j < blocks) {
              _tile_loadd(7, b + (j * C + c) * 1024, 64);
              multiply_tile(c * NB + j);
            }
          });
          if (pending) epilogue(sums[current ^ 1], before, c * 16 / C, (c + 1) * 16 / C);
        });
        unroll<C>([&](auto c) {
          unroll<NB>([&](auto j) {
            if (j < blocks) store_tile(c * NB + j, sums[current].v[c][j]);
          });
        });
        before = {y, x, std::min(16, x1 - x), m + (x - x0), nb, blocks};
        pending = true;
        current ^= 1;
      }
    }
    m += x1 - x0;
  }
  if (pending) epilogue(sums[current ^ 1], before, 0, 16);
  _tile_release();
}

}  // namespace

void stem_rows_amx(const StemArgs& a, int m0, int m1) {
  if (m0 >= m1) return;
  switch (a.w->in_channels) {
    case 1: return stem_amx<1, 4>(a, m0, m1);
    case 2: return stem_amx<2, 3>(a, m0, m1);
    case 3: return stem_amx<3, 2>(a, m0, m1);
    case 4: return stem_amx<4, 1>(a, m0, m1);
    default: return stem_rows_avx512(a, m0, m1);
  }
}

}  // namespace apot::kernels::detail
