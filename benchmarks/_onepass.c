/* One-pass reference kernels for python -m benchmarks (see benchmarks/_native.py).
 *
 * Each kernel streams over float32 arrays once, in place, split over OpenMP
 * threads: what a momentum step costs when nothing is read or written twice.
 */
#include <stddef.h>

/* Below this many floats a loop runs on one thread: waking the others costs more. */
#define PARALLEL_MIN 65536

/* v <- mu v - lr g; p <- p + v: reads p, v, g and writes p, v (5 words). */
void momentum_step(float *restrict p, float *restrict v, const float *restrict g,
                   ptrdiff_t n, float lr, float mu) {
#pragma omp parallel for simd schedule(static) if (n >= PARALLEL_MIN)
  for (ptrdiff_t i = 0; i < n; ++i) {
    float w = mu * v[i] - lr * g[i];
    v[i] = w;
    p[i] += w;
  }
}

/* a <- s a: reads and writes a (2 words), STREAM's scale in place. */
void scale(float *restrict a, ptrdiff_t n, float s) {
#pragma omp parallel for simd schedule(static) if (n >= PARALLEL_MIN)
  for (ptrdiff_t i = 0; i < n; ++i) a[i] *= s;
}

/* a <- a + s b: reads a, b and writes a (3 words). */
void triad(float *restrict a, const float *restrict b, ptrdiff_t n, float s) {
#pragma omp parallel for simd schedule(static) if (n >= PARALLEL_MIN)
  for (ptrdiff_t i = 0; i < n; ++i) a[i] += s * b[i];
}
