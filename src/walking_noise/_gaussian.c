/* Standard normal float32 draws for CPU tensors, about 6x torch.randn's single-thread rate.
 *
 * Built at first use by walking_noise.gaussian (gcc -O3 -march=native) and loaded with ctypes; see that module for
 * why it exists and how it is seeded. Each call is seeded afresh with 64 bits drawn from torch's generator; the
 * seed initialises L independent xoshiro128++ streams (via splitmix64), one per SIMD lane, and the Box-Muller
 * transform turns two uniforms into two normals. log/sin/cos are the Cephes float polynomials (about 1 ulp) written
 * out here so that the compiler vectorises them and the draws do not depend on the C library's math version.
 * The radius uses 31 random bits, so |z| <= sqrt(-2 ln 2^-32) = 6.66 (torch's own CPU normal stops at 5.8).
 */
#include <stdint.h>
#include <string.h>

#define L 16

static inline uint64_t splitmix64(uint64_t *s) {
  uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

static inline uint32_t rotl(uint32_t x, int k) { return (x << k) | (x >> (32 - k)); }

/* ln(x) for x in (0, 1]. */
static inline float ln01(float x) {
  uint32_t bits;
  memcpy(&bits, &x, 4);
  int32_t e = (int32_t)((bits >> 23) & 0xff) - 126;
  bits = (bits & 0x007fffffu) | 0x3f000000u; /* mantissa in [0.5, 1) */
  float m;
  memcpy(&m, &bits, 4);
  int small = m < 0.707106781186547524f;
  e -= small;
  m = small ? m + m - 1.0f : m - 1.0f;
  float z = m * m;
  float y = 7.0376836292E-2f;
  y = y * m - 1.1514610310E-1f;
  y = y * m + 1.1676998740E-1f;
  y = y * m - 1.2420140846E-1f;
  y = y * m + 1.4249322787E-1f;
  y = y * m - 1.6668057665E-1f;
  y = y * m + 2.0000714765E-1f;
  y = y * m - 2.4999993993E-1f;
  y = y * m + 3.3333331174E-1f;
  y = y * m * z;
  float fe = (float)e;
  y += -2.12194440E-4f * fe;
  y += -0.5f * z;
  return m + y + 0.693359375f * fe;
}

void wn_standard_normal(float *out, int64_t n, uint64_t seed) {
  uint32_t a[L], b[L], c[L], d[L];
  for (int l = 0; l < L; l++) {
    uint64_t x = splitmix64(&seed), y = splitmix64(&seed);
    a[l] = (uint32_t)x;
    b[l] = (uint32_t)(x >> 32);
    c[l] = (uint32_t)y;
    d[l] = (uint32_t)(y >> 32) | 1u; /* never the all-zero state */
  }
  float tail[2 * L];
  for (int64_t i = 0; i < n; i += 2 * L) {
    float *o = (i + 2 * L <= n) ? out + i : tail;
    uint32_t r[2 * L];
    for (int h = 0; h < 2; h++) {
      for (int l = 0; l < L; l++) { /* xoshiro128++ */
        r[h * L + l] = rotl(a[l] + d[l], 7) + a[l];
        uint32_t t = b[l] << 9;
        c[l] ^= a[l];
        d[l] ^= b[l];
        b[l] ^= c[l];
        a[l] ^= d[l];
        c[l] ^= t;
        d[l] = rotl(d[l], 11);
      }
    }
    for (int l = 0; l < L; l++) { /* Box-Muller */
      float u = (float)(int32_t)(r[l] >> 1) * 0x1p-31f + 0x1p-32f; /* (0, 1) */
      float v = (float)(int32_t)(r[L + l] >> 8) * 0x1p-22f;        /* angle / (pi/2), in [0, 4) */
      float k = (float)(int32_t)(v + 0.5f);
      float f = (v - k) * 1.57079632679489662f; /* [-pi/4, pi/4) */
      float z = f * f;
      float s = f + f * z * ((-1.9515295891E-4f * z + 8.3321608736E-3f) * z - 1.6666654611E-1f);
      float co = 1.0f - 0.5f * z + z * z * ((2.443315711809948E-5f * z - 1.388731625493765E-3f) * z +
                                            4.166664568298827E-2f);
      int q = (int)k & 3;
      float sin_t = (q == 0) ? s : (q == 1) ? co : (q == 2) ? -s : -co;
      float cos_t = (q == 0) ? co : (q == 1) ? -s : (q == 2) ? -co : s;
      float radius = __builtin_sqrtf(-2.0f * ln01(u));
      o[l] = radius * cos_t;
      o[L + l] = radius * sin_t;
    }
    if (o == tail) memcpy(out + i, tail, (size_t)(n - i) * sizeof(float));
  }
}
