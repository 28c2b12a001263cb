/* Standard normal float32 draws from the counter-based generator Philox4x32-10, fast on the CPU.
 *
 * Built at first use by walking_noise.gaussian (cc -O3 -march=native -ffp-contract=off) and loaded with ctypes; that
 * module says why it exists and holds the torch implementation of the same function, which gives bit-identical
 * draws (tested): every float operation below is one IEEE operation in a fixed order, with no fused multiply-add and
 * no library call, so the C code, torch on the CPU and torch on a GPU compute the same numbers.
 *
 * Draw i of member m (0 <= i < n) depends only on (keys[m], c1, c2, c3, i): i lies in chunk c = i / 256, at
 * position e = i % 256. Philox4x32-10 with counter (64 c + l, c1, c2, c3) and key keys[m] gives words x0..x3 of
 * lane l = 0..63; pair p = 0..127 is (x0, x1) of lane p or, for p >= 64, (x2, x3) of lane p - 64; Box-Muller turns
 * pair p into draw e = p (radius * cos) and e = 128 + p (radius * sin). Nothing depends on which other members or
 * draws are computed in the same call.
 * The radius uses 31 random bits, so |z| <= sqrt(-2 ln 2^-32) = 6.66.
 */
#include <stdint.h>
#include <string.h>

#define L 64 /* lanes: counters computed side by side (independent chains, so the arithmetic overlaps) */

static inline float bits_to_float(uint32_t b) { float f; memcpy(&f, &b, 4); return f; }
static inline uint32_t float_to_bits(float f) { uint32_t b; memcpy(&b, &f, 4); return b; }

/* ln(x) for x in (0, 1] (Cephes logf; constants as exact float32 hex values, shared with gaussian.py). */
static inline float ln01(float x) {
  uint32_t bits = float_to_bits(x);
  int32_t e = (int32_t)((bits >> 23) & 0xffu) - 126;
  float m = bits_to_float((bits & 0x007fffffu) | 0x3f000000u); /* mantissa in [0.5, 1) */
  int32_t small = -(int32_t)(m < 0x1.6a09e6p-1f); /* all ones below sqrt(1/2): branch-free, so it vectorises */
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

/* Philox4x32-10 on the L counters (block0 + l, c1, c2, c3), l = 0..L-1, into x0..x3 (one word array each). With
 * AVX-512 or AVX2 the 32x32->64 products are vpmuludq on even and odd lanes (compilers do not find this themselves
 * and emit the slow 64x64 multiply); elsewhere plain C. All three give the same words (known-answer tested). */
#if defined(__AVX512F__)
#include <immintrin.h>
static inline void mulhilo16(__m512i x, __m512i m, __m512i *hi, __m512i *lo) {
  __m512i even = _mm512_mul_epu32(x, m), odd = _mm512_mul_epu32(_mm512_srli_epi64(x, 32), m);
  *lo = _mm512_mask_blend_epi32(0xAAAA, even, _mm512_slli_epi64(odd, 32));
  *hi = _mm512_mask_blend_epi32(0xAAAA, _mm512_srli_epi64(even, 32), odd);
}
#define G (L / 16) /* 16-lane vectors per chunk: independent chains that keep the multiplier busy */
static inline void philox_lanes(uint32_t *x0, uint32_t *x1, uint32_t *x2, uint32_t *x3, uint64_t block0,
                                uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0, uint32_t k1) {
  __m512i w0[G], w1[G], w2[G], w3[G];
  const __m512i m0 = _mm512_set1_epi64(0xD2511F53u), m1 = _mm512_set1_epi64(0xCD9E8D57u);
  for (int g = 0; g < G; g++) {
    w0[g] = _mm512_add_epi32(_mm512_set1_epi32((int)(uint32_t)(block0 + 16 * g)),
                             _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
    w1[g] = _mm512_set1_epi32((int)c1);
    w2[g] = _mm512_set1_epi32((int)c2);
    w3[g] = _mm512_set1_epi32((int)c3);
  }
  for (int r = 0; r < 10; r++) {
    __m512i a = _mm512_set1_epi32((int)(k0 + (uint32_t)r * 0x9E3779B9u));
    __m512i b = _mm512_set1_epi32((int)(k1 + (uint32_t)r * 0xBB67AE85u));
    for (int g = 0; g < G; g++) {
      __m512i hi0, lo0, hi1, lo1;
      mulhilo16(w0[g], m0, &hi0, &lo0);
      mulhilo16(w2[g], m1, &hi1, &lo1);
      w0[g] = _mm512_ternarylogic_epi32(hi1, w1[g], a, 0x96); /* three-way xor */
      w2[g] = _mm512_ternarylogic_epi32(hi0, w3[g], b, 0x96);
      w1[g] = lo1;
      w3[g] = lo0;
    }
  }
  for (int g = 0; g < G; g++) {
    _mm512_storeu_si512(x0 + 16 * g, w0[g]);
    _mm512_storeu_si512(x1 + 16 * g, w1[g]);
    _mm512_storeu_si512(x2 + 16 * g, w2[g]);
    _mm512_storeu_si512(x3 + 16 * g, w3[g]);
  }
}
#elif defined(__AVX2__)
#include <immintrin.h>
static inline void mulhilo8(__m256i x, __m256i m, __m256i *hi, __m256i *lo) {
  __m256i even = _mm256_mul_epu32(x, m), odd = _mm256_mul_epu32(_mm256_srli_epi64(x, 32), m);
  *lo = _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
  *hi = _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
}
static inline void philox_lanes(uint32_t *x0, uint32_t *x1, uint32_t *x2, uint32_t *x3, uint64_t block0,
                                uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0, uint32_t k1) {
  const __m256i m0 = _mm256_set1_epi64x(0xD2511F53u), m1 = _mm256_set1_epi64x(0xCD9E8D57u);
  for (int h = 0; h < L / 8; h++) {
    __m256i w0 = _mm256_add_epi32(_mm256_set1_epi32((int)(uint32_t)(block0 + 8 * h)),
                                  _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    __m256i w1 = _mm256_set1_epi32((int)c1), w2 = _mm256_set1_epi32((int)c2), w3 = _mm256_set1_epi32((int)c3);
    for (int r = 0; r < 10; r++) {
      __m256i a = _mm256_set1_epi32((int)(k0 + (uint32_t)r * 0x9E3779B9u));
      __m256i b = _mm256_set1_epi32((int)(k1 + (uint32_t)r * 0xBB67AE85u));
      __m256i hi0, lo0, hi1, lo1;
      mulhilo8(w0, m0, &hi0, &lo0);
      mulhilo8(w2, m1, &hi1, &lo1);
      w0 = _mm256_xor_si256(_mm256_xor_si256(hi1, w1), a);
      w2 = _mm256_xor_si256(_mm256_xor_si256(hi0, w3), b);
      w1 = lo1;
      w3 = lo0;
    }
    _mm256_storeu_si256((__m256i *)(x0 + 8 * h), w0);
    _mm256_storeu_si256((__m256i *)(x1 + 8 * h), w1);
    _mm256_storeu_si256((__m256i *)(x2 + 8 * h), w2);
    _mm256_storeu_si256((__m256i *)(x3 + 8 * h), w3);
  }
}
#else
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
#endif

/* 4 L draws of one chunk: Philox on L counters gives words (x0, x1, x2, x3) per lane; the 2 L pairs (x0, x1) of
 * lanes 0..L-1 and (x2, x3) of lanes 0..L-1 give o[p] = radius * cos and o[2 L + p] = radius * sin of pair p. */
static inline void chunk(float *o, uint64_t block0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0,
                         uint32_t k1) {
  uint32_t u[2 * L], v[2 * L];
  philox_lanes(u, v, u + L, v + L, block0, c1, c2, c3, k0, k1);
  for (int p = 0; p < 2 * L; p++) box_muller(u[p], v[p], &o[p], &o[2 * L + p]);
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
