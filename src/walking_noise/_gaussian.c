/* Standard normal float32 draws from the counter-based generator Philox4x32-10, fast on the CPU.
 *
 * Built at first use by walking_noise.gaussian (cc -O3 -march=native -ffp-contract=off) and loaded with ctypes; that
 * module says why it exists and holds the torch implementation of the same function, which gives bit-identical
 * draws (tested): every float operation below is one IEEE operation with no fused multiply-add and no library call,
 * so the C code, torch on the CPU and torch on a GPU compute the same numbers.
 *
 * Draw i of member m (0 <= i < n) depends only on (keys[m], c1, c2, c3, i): i lies in chunk c = i / 256, at
 * position e = i % 256. Philox4x32-10 with counter (64 c + l, c1, c2, c3) and key keys[m] gives words x0..x3 of
 * lane l = 0..63; pair p = 0..127 is (x0, x1) of lane p or, for p >= 64, (x2, x3) of lane p - 64; Box-Muller turns
 * pair p into draw e = p (radius * cos) and e = 128 + p (radius * sin). Nothing depends on which other members or
 * draws are computed in the same call.
 * The radius uses 31 random bits, so |z| <= sqrt(-2 ln 2^-32) = 6.66.
 *
 * Two implementations of that one function, chosen at compile time, give the same bits (tested against each other,
 * against the torch twin and against draws recorded before the vector path existed):
 * - the reference (ln01, box_muller, philox_lanes): plain C, one value at a time; the torch twin mirrors it
 *   operation for operation. Built with -DWN_NO_SIMD or where neither AVX2 nor AVX-512 is available;
 * - the vector path (AVX2: 8 lanes, AVX-512: 16 lanes), written with GCC/Clang vector extensions and a few
 *   intrinsics. It performs the reference's float operations on the same operands, with three exact rewrites
 *   (each gives the same bits for every input; see box_muller_vec) and integer steps reorganised for fewer
 *   instructions. Its speed comes from keeping many independent chains in flight: Philox in the 64-bit lane layout
 *   (no shuffles to rebuild the 32x32->64 products), and Box-Muller on NV vectors at once with the ln polynomial
 *   interleaved with the sin/cos polynomials, so the out-of-order core always has independent work
 *   (benchmarks/generator_rate.py measures it against the previous version of this file).
 */
#include <stdint.h>
#include <string.h>

#define L 64 /* lanes: counters per chunk; a chunk holds 4 L draws */

static inline float bits_to_float(uint32_t b) { float f; memcpy(&f, &b, 4); return f; }
static inline uint32_t float_to_bits(float f) { uint32_t b; memcpy(&b, &f, 4); return b; }

/* ---- the reference ------------------------------------------------------------------------------------------ */

/* ln(x) for x in (0, 1] (Cephes logf; constants as exact float32 hex values, shared with gaussian.py). */
static inline float ln01(float x) {
  uint32_t bits = float_to_bits(x);
  int32_t e = (int32_t)((bits >> 23) & 0xffu) - 126;
  float m = bits_to_float((bits & 0x007fffffu) | 0x3f000000u); /* mantissa in [0.5, 1) */
  int32_t small = -(int32_t)(m < 0x1.6a09e6p-1f);
  e += small;
  m = (m + bits_to_float(float_to_bits(m) & (uint32_t)small)) - 1.0f; /* 2m - 1 or m - 1 */
  float z = m * m;
  float y = 0x1.204376p-4f;
  y = y * m - 0x1.d7a37p-4f;
  y = y * m + 0x1.de4a34p-4f;
  y = y * m - 0x1.fcba9ep-4f;
  y = y * m + 0x1.23d37ep-3f;
  y = y * m - 0x1.555ca0p-3f;
  y = y * m + 0x1.999d58p-3f;
  y = y * m - 0x1.fffff8p-3f;
  y = y * m + 0x1.555554p-2f;
  y = ((y * m) * z);
  float fe = (float)e;
  y = y + fe * -0x1.bd0106p-13f;
  y = y + z * -0.5f;
  return (m + y) + fe * 0x1.63p-1f;
}

/* Two normals from two 32-bit words: radius from u, angle from v (quadrant + Cephes sin/cos on [-pi/4, pi/4)). */
static inline void box_muller(uint32_t u_bits, uint32_t v_bits, float *z_cos, float *z_sin) {
  float u = (float)(int32_t)(u_bits >> 1) * 0x1p-31f + 0x1p-32f; /* (0, 1) */
  float v = (float)(int32_t)(v_bits >> 8) * 0x1p-22f;            /* angle / (pi/2), in [0, 4) */
  int32_t q = (int32_t)(v + 0.5f);
  float f = (v - (float)q) * 0x1.921fb6p+0f; /* (v - q) * pi/2, in [-pi/4, pi/4) */
  float z = f * f;
  float s = f + (f * z) * ((z * -0x1.9943f2p-13f + 0x1.11073cp-7f) * z - 0x1.555546p-3f);
  float c = (1.0f - z * 0.5f) + (z * z) * ((z * 0x1.99eb9cp-16f - 0x1.6c0c34p-10f) * z + 0x1.55554ap-5f);
  /* quadrant q: sin = (s, c, -s, -c)[q], cos = (c, -s, -c, s)[q], as bit operations (no branches) */
  uint32_t swap = 0u - (uint32_t)(q & 1), sb = float_to_bits(s), cb = float_to_bits(c);
  float sin_t = bits_to_float(((cb & swap) | (sb & ~swap)) ^ ((uint32_t)(q & 2) << 30));
  float cos_t = bits_to_float(((sb & swap) | (cb & ~swap)) ^ ((uint32_t)((q + 1) & 2) << 30));
  float radius = __builtin_sqrtf(ln01(u) * -2.0f);
  *z_cos = radius * cos_t;
  *z_sin = radius * sin_t;
}

/* Philox4x32-10 on the L counters (block0 + l, c1, c2, c3), l = 0..L-1, into x0..x3 (one word array each). */
static inline void philox_lanes(uint32_t *x0, uint32_t *x1, uint32_t *x2, uint32_t *x3, uint64_t block0, uint32_t c1,
                                uint32_t c2, uint32_t c3, uint32_t k0, uint32_t k1) {
  for (int l = 0; l < L; l++) {
    uint32_t w0 = (uint32_t)(block0 + (uint64_t)l), w1 = c1, w2 = c2, w3 = c3;
    for (int r = 0; r < 10; r++) {
      uint32_t a = k0 + (uint32_t)r * 0x9E3779B9u, b = k1 + (uint32_t)r * 0xBB67AE85u;
      uint64_t p0 = (uint64_t)0xD2511F53u * w0, p1 = (uint64_t)0xCD9E8D57u * w2;
      w0 = (uint32_t)(p1 >> 32) ^ w1 ^ a;
      w2 = (uint32_t)(p0 >> 32) ^ w3 ^ b;
      w1 = (uint32_t)p1;
      w3 = (uint32_t)p0;
    }
    x0[l] = w0;
    x1[l] = w1;
    x2[l] = w2;
    x3[l] = w3;
  }
}

#if !defined(WN_NO_SIMD) && (defined(__AVX512F__) || defined(__AVX2__))
/* ---- the vector path ---------------------------------------------------------------------------------------- */
#include <immintrin.h>

#if defined(__AVX512F__)
#define W 16 /* float lanes per vector */
typedef __m512i vreg;
typedef __m512 vregf;
#define MUL_EVEN_U32(a, b) ((vq)_mm512_mul_epu32((vreg)(a), (vreg)(b))) /* 32x32->64 of the even 32-bit words */
#define SQRT(x) ((vf)_mm512_sqrt_ps((vregf)(x)))                        /* correctly rounded, like sqrtf */
/* where bit 30 of t is set (odd quadrant): b, else a */
#define SELECT_BIT30(t, a, b)                                                                                    \
  ((vf)_mm512_mask_blend_ps(_mm512_test_epi32_mask((vreg)(t), _mm512_set1_epi32(0x40000000)), (vregf)(a),     \
                            (vregf)(b)))
#define OPAQUE(x) __asm__("" : "+v"(x)) /* keeps GCC from rewriting a compare against a constant as min + equal */
#else
#define W 8
typedef __m256i vreg;
typedef __m256 vregf;
#define MUL_EVEN_U32(a, b) ((vq)_mm256_mul_epu32((vreg)(a), (vreg)(b)))
#define SQRT(x) ((vf)_mm256_sqrt_ps((vregf)(x)))
#define SELECT_BIT30(t, a, b) ((vf)_mm256_blendv_ps((vregf)(a), (vregf)(b), (vregf)((vu)(t) << 1)))
#define OPAQUE(x) __asm__("" : "+x"(x))
#endif
#define NV (L / W) /* vectors per Box-Muller call: one word of each of the L lanes */

typedef float vf __attribute__((vector_size(4 * W)));
typedef int32_t vi __attribute__((vector_size(4 * W)));
typedef uint32_t vu __attribute__((vector_size(4 * W)));
typedef uint64_t vq __attribute__((vector_size(4 * W))); /* the same register seen as W / 2 64-bit lanes */

#define EACH _Pragma("GCC unroll 16") for (int k = 0; k < NV; k++)

/* Philox4x32-10 on the W counters (block0 + l, c1, c2, c3), l = 0..W-1: words x[0..3], lane l in element l.
 * Even lanes live in the low halves of the 64-bit elements of e*, odd lanes in those of o*; vpmuludq reads only
 * the low halves, so the high halves may hold anything until the words are packed at the end. ka, kb: the round
 * keys, broadcast. */
static inline void philox_vec(vu x[4], uint32_t block0, uint32_t c1, uint32_t c2, uint32_t c3, const vq *ka,
                              const vq *kb) {
  vu lane;
  for (int i = 0; i < W; i++) lane[i] = (uint32_t)i;
  vq e0 = (vq)(lane + block0), o0 = e0 >> 32;
  vq e1 = (vq)((vu){0} + c1), e2 = (vq)((vu){0} + c2), e3 = (vq)((vu){0} + c3), o1 = e1, o2 = e2, o3 = e3;
  const vq m0 = (vq){0} + 0xD2511F53u, m1 = (vq){0} + 0xCD9E8D57u;
  for (int r = 0; r < 10; r++) {
    vq pe0 = MUL_EVEN_U32(e0, m0), pe2 = MUL_EVEN_U32(e2, m1), po0 = MUL_EVEN_U32(o0, m0),
       po2 = MUL_EVEN_U32(o2, m1);
    e0 = (pe2 >> 32) ^ (e1 ^ ka[r]); /* the key xor off the multiply-shift chain */
    e2 = (pe0 >> 32) ^ (e3 ^ kb[r]);
    o0 = (po2 >> 32) ^ (o1 ^ ka[r]);
    o2 = (po0 >> 32) ^ (o3 ^ kb[r]);
    e1 = pe2; /* the low half is the low word of the product */
    e3 = pe0;
    o1 = po2;
    o3 = po0;
  }
  const vq low = (vq){0} + 0xFFFFFFFFu;
  x[0] = (vu)((e0 & low) | (o0 << 32));
  x[1] = (vu)((e1 & low) | (o1 << 32));
  x[2] = (vu)((e2 & low) | (o2 << 32));
  x[3] = (vu)((e3 & low) | (o3 << 32));
}

/* box_muller on NV vectors of word pairs (ub[k], vb[k]): zc[k] = radius * cos, zs[k] = radius * sin. Each line is
 * one stage for all NV vectors, and the sin/cos polynomials run between the steps of the ln polynomial, so every
 * stage has independent operations to overlap. The float operations are the reference's, except three exact
 * rewrites (the same bits for every input):
 * - reference: v = (v_bits >> 8) 2^-22, q = (int)(v + 0.5), f = (v - q) pi/2. Here the quadrant q mod 4 is the
 *   top two bits of t = v_bits + 2^29 (rounding v to the nearest integer; only q mod 4 is used), v - q is the signed
 *   22-bit field d = bits 29..8 of v_bits, exact in float, and f = d (pi/2 2^-22): one rounding of the same real
 *   product, since scaling by a power of two commutes with rounding. (v + 0.5 rounds only for v >= 3.5, where it
 *   still truncates to 4 = 0 mod 4.)
 * - reference: m + (m & small) with m in [0.5, 1): doubles m exactly or adds 0; here the exponent field + 1.
 * - reference: ln * -2 (exact); here -(ln + ln) (exact: the same value and sign, zero included), on an adder
 *   rather than the busier multipliers. */
static inline void box_muller_vec(const vu *ub, const vu *vb, vf *zc, vf *zs) {
  vf m[NV], z[NV], y[NV], fe[NV], f[NV], s[NV], c[NV], zz[NV], fz[NV], z2[NV], half[NV];
  vu t[NV];
  EACH {
    vf u = __builtin_convertvector((vi)(ub[k] >> 1), vf) * 0x1p-31f;
    u = u + 0x1p-32f; /* (0, 1): positive, so the exponent field needs no mask */
    vu bits = (vu)u, mant = bits & 0x007FFFFFu;
    vi limit = (vi){0} + 0x3504F3; /* mantissa bits of sqrt(1/2): m < sqrt(1/2) as an integer compare */
    OPAQUE(limit);
    vi small = limit > (vi)mant;
    fe[k] = __builtin_convertvector((vi)(bits >> 23) + small - 126, vf);
    m[k] = (vf)((mant | 0x3F000000u) + ((vu)small & 0x00800000u)); /* m or 2m */
  }
  EACH {
    t[k] = vb[k] + 0x20000000u;
    f[k] = __builtin_convertvector(((vi)(vb[k] << 2)) >> 10, vf) * 0x1.921fb6p-22f;
  }
  EACH m[k] = m[k] - 1.0f;
  EACH zz[k] = f[k] * f[k];
  EACH z[k] = m[k] * m[k];
  EACH y[k] = m[k] * 0x1.204376p-4f;
  EACH s[k] = zz[k] * -0x1.9943f2p-13f;
  EACH c[k] = zz[k] * 0x1.99eb9cp-16f;
  EACH y[k] = y[k] - 0x1.d7a37p-4f;
  EACH s[k] = s[k] + 0x1.11073cp-7f;
  EACH c[k] = c[k] - 0x1.6c0c34p-10f;
  EACH y[k] = y[k] * m[k];
  EACH s[k] = s[k] * zz[k];
  EACH c[k] = c[k] * zz[k];
  EACH y[k] = y[k] + 0x1.de4a34p-4f;
  EACH s[k] = s[k] - 0x1.555546p-3f;
  EACH c[k] = c[k] + 0x1.55554ap-5f;
  EACH y[k] = y[k] * m[k];
  EACH fz[k] = f[k] * zz[k];
  EACH z2[k] = zz[k] * zz[k];
  EACH half[k] = zz[k] * 0.5f;
  EACH y[k] = y[k] - 0x1.fcba9ep-4f;
  EACH half[k] = 1.0f - half[k];
  EACH s[k] = fz[k] * s[k];
  EACH c[k] = z2[k] * c[k];
  EACH y[k] = y[k] * m[k];
  EACH s[k] = f[k] + s[k];
  EACH c[k] = half[k] + c[k];
  EACH y[k] = y[k] + 0x1.23d37ep-3f;
  EACH { /* the quadrant: q & 1 is bit 30 of t, q & 2 bit 31; cos is negative for q = 1, 2 */
    vf sin_t = (vf)((vu)SELECT_BIT30(t[k], s[k], c[k]) ^ (t[k] & 0x80000000u));
    vf cos_t = (vf)((vu)SELECT_BIT30(t[k], c[k], s[k]) ^ ((t[k] ^ (t[k] << 1)) & 0x80000000u));
    s[k] = sin_t;
    c[k] = cos_t;
  }
  EACH y[k] = y[k] * m[k];
  EACH y[k] = y[k] - 0x1.555ca0p-3f;
  EACH y[k] = y[k] * m[k];
  EACH y[k] = y[k] + 0x1.999d58p-3f;
  EACH y[k] = y[k] * m[k];
  EACH y[k] = y[k] - 0x1.fffff8p-3f;
  EACH y[k] = y[k] * m[k];
  EACH y[k] = y[k] + 0x1.555554p-2f;
  EACH y[k] = y[k] * m[k];
  EACH y[k] = y[k] * z[k];
  EACH y[k] = y[k] + fe[k] * -0x1.bd0106p-13f;
  EACH y[k] = y[k] + z[k] * -0.5f;
  EACH y[k] = (m[k] + y[k]) + fe[k] * 0x1.63p-1f; /* ln(u) */
  EACH y[k] = SQRT((vf)((vu)(y[k] + y[k]) ^ 0x80000000u));
  EACH {
    zc[k] = y[k] * c[k];
    zs[k] = y[k] * s[k];
  }
}

/* The 4 L draws of one chunk (the layout of the header comment). */
static inline void chunk(float *o, uint64_t block0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0,
                         uint32_t k1) {
  vq ka[10], kb[10];
  for (int r = 0; r < 10; r++) {
    ka[r] = (vq){0} + (uint64_t)(k0 + (uint32_t)r * 0x9E3779B9u);
    kb[r] = (vq){0} + (uint64_t)(k1 + (uint32_t)r * 0xBB67AE85u);
  }
  vu x0[NV], x1[NV], x2[NV], x3[NV];
  for (int h = 0; h < NV; h++) {
    vu x[4];
    philox_vec(x, (uint32_t)(block0 + (uint64_t)(W * h)), c1, c2, c3, ka, kb);
    x0[h] = x[0];
    x1[h] = x[1];
    x2[h] = x[2];
    x3[h] = x[3];
  }
  vf zc[NV], zs[NV];
  box_muller_vec(x0, x1, zc, zs); /* pairs 0..L-1 */
  memcpy(o, zc, sizeof zc);
  memcpy(o + 2 * L, zs, sizeof zs);
  box_muller_vec(x2, x3, zc, zs); /* pairs L..2L-1 */
  memcpy(o + L, zc, sizeof zc);
  memcpy(o + 3 * L, zs, sizeof zs);
}

#else
/* ---- the reference path ------------------------------------------------------------------------------------- */

static inline void chunk(float *o, uint64_t block0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0,
                         uint32_t k1) {
  uint32_t u[2 * L], v[2 * L];
  philox_lanes(u, v, u + L, v + L, block0, c1, c2, c3, k0, k1);
  for (int p = 0; p < 2 * L; p++) box_muller(u[p], v[p], &o[p], &o[2 * L + p]);
}
#endif

/* Which implementation this build holds: 16 (AVX-512), 8 (AVX2) or 1 (the reference). */
int32_t wn_lanes_per_vector(void) {
#if !defined(WN_NO_SIMD) && (defined(__AVX512F__) || defined(__AVX2__))
  return W;
#else
  return 1;
#endif
}

/* out[m * n + i] = draw i of member m, for the members whose active[m] is nonzero (active NULL: all); the rows of
 * inactive members are zero-filled. Requires n <= 2^36 (the block counter is 32 bits). */
void wn_philox_normal(float *out, int64_t n, int32_t members, const uint64_t *keys, const uint8_t *active,
                      uint32_t c1, uint32_t c2, uint32_t c3) {
  float tail[4 * L];
  for (int32_t m = 0; m < members; m++) {
    float *row = out + (int64_t)m * n;
    if (active && !active[m]) {
      memset(row, 0, (size_t)n * sizeof(float));
      continue;
    }
    uint32_t k0 = (uint32_t)keys[m], k1 = (uint32_t)(keys[m] >> 32);
    int64_t i = 0;
    for (; i + 4 * L <= n; i += 4 * L) chunk(row + i, (uint64_t)(i / 4), c1, c2, c3, k0, k1);
    if (i < n) {
      chunk(tail, (uint64_t)(i / 4), c1, c2, c3, k0, k1);
      memcpy(row + i, tail, (size_t)(n - i) * sizeof(float));
    }
  }
}

/* The raw Philox4x32-10 block (for the known-answer tests of both implementations). */
void wn_philox4x32_10(const uint32_t *counter, const uint32_t *key, uint32_t *out) {
  uint32_t x0 = counter[0], x1 = counter[1], x2 = counter[2], x3 = counter[3];
  for (int r = 0; r < 10; r++) {
    uint32_t a = key[0] + (uint32_t)r * 0x9E3779B9u, b = key[1] + (uint32_t)r * 0xBB67AE85u;
    uint64_t p0 = (uint64_t)0xD2511F53u * x0, p1 = (uint64_t)0xCD9E8D57u * x2;
    uint32_t y0 = (uint32_t)(p1 >> 32) ^ x1 ^ a, y2 = (uint32_t)(p0 >> 32) ^ x3 ^ b;
    x1 = (uint32_t)p1;
    x3 = (uint32_t)p0;
    x0 = y0;
    x2 = y2;
  }
  out[0] = x0;
  out[1] = x1;
  out[2] = x2;
  out[3] = x3;
}
