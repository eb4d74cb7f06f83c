/* Time loops of the native CPU path, in C (and, at the end, the order
 * statistics of the adaptive step and the binary inputs of the Linear + Leaky
 * layer: their packed copy and the event-driven input current, which sums in
 * another order than PyTorch's product).
 *
 * The vectorised PyTorch loops in native.py run a handful of small tensor
 * operations per time step; their dispatch costs more than their arithmetic.
 * These functions run the same loops over raw float32/float64 buffers,
 * operation for operation: every product and sum is rounded to the buffer's
 * type before the next (compiled without fused multiply-add and without
 * fast-math), so the results equal PyTorch's bit for bit. Selections are
 * written branch-free (a ? b : c on values) so that the compiler vectorises
 * the inner loops.
 *
 * Arguments are addresses (Python ints from Tensor.data_ptr(), 0 for none)
 * and sizes; the caller (native.py) checks dtypes, contiguity and shapes.
 * The GIL is released while a loop runs.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* The reset mechanisms' numbers come from snntorch_localzo/_ops/resets.py, the
 * one definition, through setup.py's define_macros; the module exports them
 * (RESET_SUBTRACT, ...) so that the package can check its build. */
#if !defined(RESET_SUBTRACT) || !defined(RESET_ZERO) || !defined(RESET_NONE)
#error "RESET_SUBTRACT, RESET_ZERO and RESET_NONE are defined by setup.py (from snntorch_localzo/_ops/resets.py)"
#endif

/* One time step for neurons [0, n): the membrane, the spike times graded,
 * |mem - thr| (optional) and the spike flag (optional), from the previous
 * membrane prev (NULL: zero).
 *   subtract: mem = b * prev + x - (prev > thr ? thr : 0)
 *   zero:     mem = b * (prev > thr ? 0 * prev : prev) + x
 *   none:     mem = b * prev + x                                            */
#define LEAKY_STEP(NAME, T_, RESET)                                                   \
    static void NAME(const T_ *restrict x, const T_ *restrict prev, T_ *restrict mem,  \
                     T_ *restrict spk, T_ *restrict uabs, uint8_t *restrict fired,     \
                     int64_t n, T_ b, T_ thr, T_ gr)                                  \
    {                                                                                 \
        const T_ zero_gr = (T_)0 * gr;                                                \
        for (int64_t i = 0; i < n; i++) {                                             \
            T_ m = prev ? prev[i] : (T_)0;                                            \
            T_ v;                                                                     \
            if (RESET == RESET_ZERO) {                                                \
                T_ kept = m > thr ? (T_)0 * m : m;                                    \
                v = b * kept;                                                         \
            } else {                                                                  \
                v = b * m;                                                            \
            }                                                                         \
            v = v + x[i];                                                             \
            if (RESET == RESET_SUBTRACT) v = v - (m > thr ? thr : (T_)0);             \
            mem[i] = v;                                                               \
            T_ u = v - thr;                                                           \
            spk[i] = u > (T_)0 ? gr : zero_gr;                                        \
            if (uabs) uabs[i] = u < (T_)0 ? -u : u;                                   \
            if (fired) fired[i] = u > (T_)0;                                          \
        }                                                                             \
    }

LEAKY_STEP(step_sub_f32, float, RESET_SUBTRACT)
LEAKY_STEP(step_zero_f32, float, RESET_ZERO)
LEAKY_STEP(step_none_f32, float, RESET_NONE)
LEAKY_STEP(step_sub_f64, double, RESET_SUBTRACT)
LEAKY_STEP(step_zero_f64, double, RESET_ZERO)
LEAKY_STEP(step_none_f64, double, RESET_NONE)

#define LEAKY_SCAN(NAME, T_, SUB, ZERO, NONE)                                         \
    static void NAME(const T_ *x, const T_ *mem0, T_ *mem, T_ *spk, T_ *uabs,          \
                     uint8_t *fired, int64_t steps, int64_t n, T_ b, T_ thr, T_ gr,   \
                     int reset)                                                       \
    {                                                                                 \
        for (int64_t t = 0; t < steps; t++) {                                         \
            const int64_t o = t * n;                                                  \
            const T_ *prev = t ? mem + o - n : mem0;                                  \
            T_ *ua = uabs ? uabs + o : NULL;                                          \
            uint8_t *f = fired ? fired + o : NULL;                                    \
            if (reset == RESET_SUBTRACT)                                              \
                SUB(x + o, prev, mem + o, spk + o, ua, f, n, b, thr, gr);             \
            else if (reset == RESET_ZERO)                                             \
                ZERO(x + o, prev, mem + o, spk + o, ua, f, n, b, thr, gr);            \
            else                                                                      \
                NONE(x + o, prev, mem + o, spk + o, ua, f, n, b, thr, gr);            \
        }                                                                             \
    }

LEAKY_SCAN(leaky_scan_f32, float, step_sub_f32, step_zero_f32, step_none_f32)
LEAKY_SCAN(leaky_scan_f64, double, step_sub_f64, step_zero_f64, step_none_f64)

/* Backward of the scan, for t from the last step down:
 *   gm = grad_mem[t] + carry (or carry); gm = gm + e[t]; gx[t] = gm;
 *   carry = gm * b, zeroed (0 * carry) where resets[t].
 * e is dense (e_dense) or sparse: sorted flat indices e_index into [steps, n]
 * with values e_val, zero elsewhere (then gm + 0 is skipped: the same value
 * up to the sign of a zero). */
#define REVERSE_SCAN(NAME, T_)                                                        \
    static void NAME(const T_ *e_dense, const int64_t *e_index, const T_ *e_val,        \
                     int64_t e_count, const T_ *gmem, const uint8_t *resets, T_ *gx,    \
                     T_ *carry, int64_t steps, int64_t n, T_ b)                       \
    {                                                                                 \
        int64_t k = e_count - 1;                                                      \
        for (int64_t i = 0; i < n; i++) carry[i] = (T_)0;                             \
        for (int64_t t = steps - 1; t >= 0; t--) {                                    \
            const int64_t o = t * n;                                                  \
            T_ *g = gx + o;                                                           \
            if (gmem)                                                                 \
                for (int64_t i = 0; i < n; i++) g[i] = gmem[o + i] + carry[i];        \
            else                                                                      \
                for (int64_t i = 0; i < n; i++) g[i] = carry[i];                      \
            if (e_dense)                                                              \
                for (int64_t i = 0; i < n; i++) g[i] = g[i] + e_dense[o + i];         \
            for (; k >= 0 && e_index[k] >= o; k--) g[e_index[k] - o] += e_val[k];     \
            if (resets) {                                                             \
                const uint8_t *r = resets + o;                                        \
                for (int64_t i = 0; i < n; i++) {                                     \
                    T_ c = g[i] * b;                                                  \
                    carry[i] = r[i] ? (T_)0 * c : c;                                  \
                }                                                                     \
            } else {                                                                  \
                for (int64_t i = 0; i < n; i++) carry[i] = g[i] * b;                  \
            }                                                                         \
        }                                                                             \
    }

REVERSE_SCAN(reverse_scan_f32, float)
REVERSE_SCAN(reverse_scan_f64, double)

/* out[s] = b * tr + x[t0 + s], tr = out[s], from tr = carry (in place: the
 * last step's trace on return). */
#define TRACE(NAME, T_)                                                               \
    static void NAME(const T_ *x, T_ *out, T_ *carry, int64_t t0, int64_t steps,        \
                     int64_t n, T_ b)                                                 \
    {                                                                                 \
        for (int64_t s = 0; s < steps; s++) {                                         \
            const T_ *restrict xt = x + (t0 + s) * n;                                 \
            T_ *restrict o = out + s * n;                                             \
            for (int64_t i = 0; i < n; i++) {                                         \
                T_ v = b * carry[i];                                                  \
                v = v + xt[i];                                                        \
                o[i] = v;                                                             \
                carry[i] = v;                                                         \
            }                                                                         \
        }                                                                             \
    }

TRACE(trace_f32, float)
TRACE(trace_f64, double)

/* Order statistics of the adaptive step: for each of `rows` rows of n floats,
 * the k1-th and k2-th smallest (1-based, 1 <= k1 <= k2 <= n), NaN counted as
 * +infinity: exactly the values torch.kthvalue returns. A radix selection:
 * one pass maps each value to an order-preserving 32-bit key and counts the
 * keys by their top 8 bits (coarse) and top 14 bits (fine: sign, exponent
 * and 5 mantissa bits), which gives the fine bin of each wanted rank and the
 * rank inside it; a second pass gathers that bin's values (a few of the
 * row) and a quickselect finds the rank among them. The counts are zeroed
 * again through the keys, so a row costs O(n) whatever the number of bins.
 * Rows of at most KTH_SMALL values are selected directly (a quickselect on a
 * copy costs less there than the counts).                                   */

#define KTH_FINE 18
#define KTH_SMALL 128
#define KTH_COARSE 24

static uint32_t order_key(float x)
{
    uint32_t b;
    if (x != x) x = INFINITY;
    if (x == 0.0f) x = 0.0f;  /* -0 sorts with +0 */
    memcpy(&b, &x, sizeof b);
    return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

static float key_value(uint32_t k)
{
    uint32_t b = (k & 0x80000000u) ? (k & 0x7fffffffu) : ~k;
    float x;
    memcpy(&x, &b, sizeof x);
    return x;
}

static void select_kth(float *v, int64_t lo, int64_t hi, int64_t k)
{
    /* afterwards v[k] is the value of rank k of v[lo..hi] (0-based), every
     * v[lo..k-1] <= v[k] <= every v[k+1..hi]; NaN-free input */
    while (hi > lo) {
        int64_t mid = lo + (hi - lo) / 2;
        float a = v[lo], b = v[mid], c = v[hi];
        float pivot = a < b ? (b < c ? b : (a < c ? c : a)) : (a < c ? a : (b < c ? c : b));
        int64_t i = lo, j = hi;
        while (i <= j) {
            while (v[i] < pivot) i++;
            while (v[j] > pivot) j--;
            if (i <= j) {
                float t = v[i]; v[i] = v[j]; v[j] = t;
                i++; j--;
            }
        }
        if (k <= j) hi = j;
        else if (k >= i) lo = i;
        else return;  /* v[j+1..i-1] all equal the pivot */
    }
}

/* The value of rank k (0-based) among the n keys, given their counts. */
static float kth_of_keys(const uint32_t *keys, int64_t n, const uint32_t *coarse,
                         const uint32_t *fine, int64_t k, float *cand)
{
    uint32_t c = 0, f;
    int64_t below = 0;
    while (below + coarse[c] <= k) below += coarse[c++];
    f = c << (KTH_COARSE - KTH_FINE);
    while (below + fine[f] <= k) below += fine[f++];
    int64_t m = 0;
    for (int64_t i = 0; i < n; i++)
        if ((keys[i] >> KTH_FINE) == f) cand[m++] = key_value(keys[i]);
    select_kth(cand, 0, m - 1, k - below);
    return cand[k - below];
}

static int row_kth2(const float *a, int64_t rows, int64_t n, int64_t k1, int64_t k2,
                    float *out1, float *out2)
{
    uint32_t *coarse = (uint32_t *)calloc((size_t)1 << (32 - KTH_COARSE), sizeof(uint32_t));
    uint32_t *fine = (uint32_t *)calloc((size_t)1 << (32 - KTH_FINE), sizeof(uint32_t));
    uint32_t *keys = (uint32_t *)malloc((size_t)n * sizeof(uint32_t));
    float *cand = (float *)malloc((size_t)n * sizeof(float));
    int status = (coarse && fine && keys && cand) ? 0 : -1;
    for (int64_t r = 0; !status && r < rows; r++) {
        const float *row = a + r * n;
        if (n <= KTH_SMALL) {
            for (int64_t i = 0; i < n; i++) cand[i] = row[i] != row[i] ? INFINITY : row[i];
            select_kth(cand, 0, n - 1, k1 - 1);
            out1[r] = cand[k1 - 1];
            select_kth(cand, k1 - 1, n - 1, k2 - 1);
            out2[r] = cand[k2 - 1];
            continue;
        }
        for (int64_t i = 0; i < n; i++) {
            uint32_t k = order_key(row[i]);
            keys[i] = k;
            coarse[k >> KTH_COARSE]++;
            fine[k >> KTH_FINE]++;
        }
        out1[r] = kth_of_keys(keys, n, coarse, fine, k1 - 1, cand);
        out2[r] = k2 == k1 ? out1[r] : kth_of_keys(keys, n, coarse, fine, k2 - 1, cand);
        for (int64_t i = 0; i < n; i++) {
            coarse[keys[i] >> KTH_COARSE] = 0;
            fine[keys[i] >> KTH_FINE] = 0;
        }
    }
    free(coarse);
    free(fine);
    free(keys);
    free(cand);
    return status;
}

/* The adaptive step's passes over a call's membrane u [rows, n] (float32;
 * adaptive.py holds the rule, these compute its O(n) parts):
 * rule_stats: per row, the k1-th and k2-th smallest of |u| (NaN as +inf,
 *   the values torch.kthvalue returns) and the count of entries above 0;
 * rule_floors: per entry, the step of its row (or of its row's channel
 *   group of `pos` entries) widened by the channel and entry floors:
 *   d_c = max(d_row, min(min over the group of |u| / x_q, ceil)) where
 *   x_q > 0, then out = max(d_c, min(|u| / x_e, ceil)) where x_e > 0,
 *   with IEEE float32 divisions, as torch computes them.                   */
static int rule_stats(const float *u, int64_t rows, int64_t n, int64_t k1, int64_t k2,
                      float *out1, float *out2, int64_t *fire)
{
    float *a = (float *)malloc((size_t)(rows * n) * sizeof(float));
    if (!a) return -1;
    for (int64_t r = 0; r < rows; r++) {
        const float *row = u + r * n;
        float *ar = a + r * n;
        int64_t count = 0;
        for (int64_t i = 0; i < n; i++) {
            float x = row[i];
            count += x > 0.0f;
            ar[i] = x != x ? INFINITY : fabsf(x);
        }
        fire[r] = count;
    }
    int status = row_kth2(a, rows, n, k1, k2, out1, out2);
    free(a);
    return status;
}

static void rule_floors(const float *u, const float *drow, int64_t rows, int64_t groups,
                        int64_t pos, float x_q, float x_e, float ceil, float *out)
{
    for (int64_t r = 0; r < rows; r++) {
        for (int64_t g = 0; g < groups; g++) {
            const float *v = u + (r * groups + g) * pos;
            float *o = out + (r * groups + g) * pos;
            float d = drow[r];
            if (x_q > 0.0f) {
                float near = INFINITY;
                for (int64_t i = 0; i < pos; i++) {
                    float x = v[i] != v[i] ? INFINITY : fabsf(v[i]);
                    near = x < near ? x : near;
                }
                float f = near / x_q;
                f = f > ceil ? ceil : f;
                d = f > d ? f : d;
            }
            if (x_e > 0.0f) {
                for (int64_t i = 0; i < pos; i++) {
                    float x = v[i] != v[i] ? INFINITY : fabsf(v[i]);
                    float f = x / x_e;
                    f = f > ceil ? ceil : f;
                    o[i] = f > d ? f : d;
                }
            } else {
                for (int64_t i = 0; i < pos; i++) o[i] = d;
            }
        }
    }
}

/* The estimate of every entry from its drawn magnitudes, then its non-zero
 * entries: g[i] = coef * sum_d w(absz[d, i]) * (uabs[i] < delta * absz[d, i]),
 * w(a) = a (p = +1) or 1 / a (p = -1), summed from 0 in the order of d, with
 * the float operations of sampling.estimate (so the same bits); then the
 * indices and values of the entries with g != 0, ascending. g: n entries of
 * scratch. Returns the number of non-zero entries (the second pass fills
 * index and values, which must hold that many, when they are not NULL).   */
#define DENSE_ESTIMATE(NAME, T_)                                                        \
    static int64_t NAME(const T_ *uabs, const T_ *absz, int64_t m, int64_t n, T_ delta, \
                        T_ coef, int p_pos, T_ *g)                                      \
    {                                                                                   \
        int64_t count = 0;                                                              \
        for (int64_t i = 0; i < n; i++) {                                               \
            T_ acc = (T_)0, u = uabs[i];                                                \
            for (int64_t d = 0; d < m; d++) {                                           \
                const T_ a = absz[d * n + i];                                           \
                const T_ w = p_pos ? a : (T_)1 / a;                                     \
                acc = acc + (u < delta * a ? w : (T_)0);                                \
            }                                                                           \
            acc = acc * coef;                                                           \
            g[i] = acc;                                                                 \
            count += acc != (T_)0;                                                      \
        }                                                                               \
        return count;                                                                   \
    }

DENSE_ESTIMATE(dense_estimate_f32, float)
DENSE_ESTIMATE(dense_estimate_f64, double)

#define COMPACT(NAME, T_)                                                               \
    static void NAME(const T_ *g, int64_t n, int64_t *index, T_ *values)                \
    {                                                                                   \
        int64_t k = 0;                                                                  \
        for (int64_t i = 0; i < n; i++)                                                 \
            if (g[i] != (T_)0) {                                                        \
                index[k] = i;                                                           \
                values[k++] = g[i];                                                     \
            }                                                                           \
    }

COMPACT(compact_f32, float)
COMPACT(compact_f64, double)

static PyObject *py_dense_estimate(PyObject *self, PyObject *args)
{
    unsigned long long uabs, absz, g;
    long long m, n, count;
    double delta, coef;
    int p_pos, f64;
    if (!PyArg_ParseTuple(args, "KKLLddiKi", &uabs, &absz, &m, &n, &delta, &coef, &p_pos, &g, &f64))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    count = f64 ? dense_estimate_f64((const double *)uabs, (const double *)absz, m, n, delta, coef,
                                     p_pos, (double *)g)
                : dense_estimate_f32((const float *)uabs, (const float *)absz, m, n, (float)delta,
                                     (float)coef, p_pos, (float *)g);
    Py_END_ALLOW_THREADS
    return PyLong_FromLongLong(count);
}

static PyObject *py_compact(PyObject *self, PyObject *args)
{
    unsigned long long g, index, values;
    long long n;
    int f64;
    if (!PyArg_ParseTuple(args, "KLKKi", &g, &n, &index, &values, &f64))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    if (f64) compact_f64((const double *)g, n, (int64_t *)index, (double *)values);
    else compact_f32((const float *)g, n, (int64_t *)index, (float *)values);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

/* Binary inputs, for the Linear + Leaky layer: the copy kept for backward and
 * the event-driven input current. */

/* The widest vector unit the CPU has runs these loops (one machine code per
 * unit, picked when the module loads), where the compiler can build that. */
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 8 && defined(__x86_64__) && defined(__linux__)
#define VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define VECTOR_CLONES
#endif

/* EVENT_OFFSETS[m]: the positions of the set bits of the byte m, ascending;
 * EVENT_ONES[m]: their number (both filled when the module loads). */
static int32_t EVENT_OFFSETS[256][8];
static uint8_t EVENT_ONES[256];

static void fill_event_tables(void)
{
    for (int m = 0; m < 256; m++) {
        int k = 0;
        for (int b = 0; b < 8; b++)
            if (m >> b & 1) EVENT_OFFSETS[m][k++] = b;
        EVENT_ONES[m] = (uint8_t)k;
    }
}

/* The columns of the ones of o[0, n) (bytes 0 or 1), ascending, written to
 * cols from cols[0]; returns their number. Eight bytes at a time, without a
 * branch on the values: their bits gathered into a byte m, then the eight
 * offsets of m written and the count advanced by m's ones (so cols must
 * have 8 entries to spare past the last one it can hold: k may reach the
 * capacity before a block of eight is written). */
#if defined(__GNUC__)
typedef int32_t event_columns __attribute__((vector_size(8 * sizeof(int32_t))));
#endif

static inline int64_t byte_columns(const uint8_t *restrict o, int64_t n, int32_t *restrict cols)
{
    int64_t k = 0, i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, o + i, sizeof w);
        const unsigned m = (unsigned)((w * 0x0102040810204080ull) >> 56); /* bit q: byte q */
#if defined(__GNUC__)
        event_columns v;
        memcpy(&v, EVENT_OFFSETS[m], sizeof v);
        v += (int32_t)i;
        memcpy(cols + k, &v, sizeof v);
#else
        for (int q = 0; q < 8; q++) cols[k + q] = (int32_t)i + EVENT_OFFSETS[m][q];
#endif
        k += EVENT_ONES[m];
    }
    for (; i < n; i++) {
        cols[k] = (int32_t)i;
        k += o[i];
    }
    return k;
}

/* Spikes in one byte each and as events. x: rows of n entries; out[i] = x[i]
 * for x in {+0, 1} (bit patterns, so -0 does not pass); returns -1 at the end
 * of the first row that holds another value, else the number of ones. While
 * they are at most cap (none where cols is NULL), the column of every one,
 * row after row in ascending order, goes to cols (cap + 8 entries: see
 * byte_columns) and the end of each row's columns (the running count) to
 * row_end. */
#define BINARY_EVENTS(NAME, T_, UT_, ONE)                                             \
    VECTOR_CLONES static int64_t NAME(const T_ *x, uint8_t *out, int32_t *cols,         \
                                      int64_t *row_end, int64_t rows, int64_t n,        \
                                      int64_t cap)                                      \
    {                                                                                   \
        int64_t count = 0;                                                              \
        for (int64_t r = 0; r < rows; r++) {                                            \
            const T_ *xr = x + r * n;                                                   \
            uint8_t *o = out + r * n;                                                   \
            int64_t ones = 0, other = 0;                                                \
            for (int64_t i = 0; i < n; i++) {                                           \
                UT_ b;                                                                  \
                memcpy(&b, xr + i, sizeof b);                                           \
                const int one = b == (UT_)(ONE);                                        \
                o[i] = (uint8_t)one;                                                    \
                ones += one;                                                            \
                other += (b != 0) & !one;                                               \
            }                                                                           \
            if (other) return -1;                                                       \
            if (cols && count + ones <= cap) {                                          \
                byte_columns(o, n, cols + count);                                       \
                row_end[r] = count + ones;                                              \
            }                                                                           \
            count += ones;                                                              \
        }                                                                               \
        return count;                                                                   \
    }

BINARY_EVENTS(binary_events_f32, float, uint32_t, 0x3f800000u)
BINARY_EVENTS(binary_events_f64, double, uint64_t, 0x3ff0000000000000ull)

/* The event-driven input current: out[r, :] = the sum of the rows wt[j, :]
 * (wt: [in, m]) over the columns j of row r (cols and row_end of
 * binary_events), added in that order from 0, plus bias (NULL: none). Each
 * block of EVENT_WIDTH bytes of a row is summed in registers (four vectors
 * of GCC's vector extension, which the compiler maps onto the unit at hand;
 * a plain loop elsewhere), the last, narrower block in place in out. */
#define EVENT_WIDTH 256
#if defined(__GNUC__)
typedef float event_vec_float __attribute__((vector_size(EVENT_WIDTH / 4)));
typedef double event_vec_double __attribute__((vector_size(EVENT_WIDTH / 4)));
#define EVENT_BLOCK(T_, cols, start, end, wt, m, c0, o)                                 \
    do {                                                                                \
        event_vec_##T_ a[4] = {{0}, {0}, {0}, {0}}, v;                                  \
        for (int64_t p = start; p < end; p++) {                                         \
            const char *w = (const char *)(wt + (int64_t)cols[p] * m + c0);             \
            for (int q = 0; q < 4; q++) {                                               \
                memcpy(&v, w + q * sizeof v, sizeof v);                                 \
                a[q] += v;                                                              \
            }                                                                           \
        }                                                                               \
        memcpy(o + c0, a, sizeof a);                                                    \
    } while (0)
#else
#define EVENT_BLOCK(T_, cols, start, end, wt, m, c0, o)                                 \
    do {                                                                                \
        T_ a[EVENT_WIDTH / sizeof(T_)] = {0};                                           \
        for (int64_t p = start; p < end; p++) {                                         \
            const T_ *w = wt + (int64_t)cols[p] * m + c0;                               \
            for (int k = 0; k < (int)(EVENT_WIDTH / sizeof(T_)); k++) a[k] += w[k];      \
        }                                                                               \
        memcpy(o + c0, a, sizeof a);                                                    \
    } while (0)
#endif

#define EVENT_SUM(NAME, T_)                                                             \
    VECTOR_CLONES static void NAME(const int32_t *cols, const int64_t *row_end,         \
                                   const T_ *wt, const T_ *bias, T_ *out, int64_t rows, \
                                   int64_t m)                                           \
    {                                                                                   \
        const int64_t W = EVENT_WIDTH / sizeof(T_);                                     \
        for (int64_t r = 0; r < rows; r++) {                                            \
            const int64_t start = r ? row_end[r - 1] : 0, end = row_end[r];             \
            T_ *restrict o = out + r * m;                                               \
            int64_t c0 = 0;                                                             \
            for (; c0 + W <= m; c0 += W) EVENT_BLOCK(T_, cols, start, end, wt, m, c0, o);  \
            for (int64_t c = c0; c < m; c++) o[c] = (T_)0;                              \
            for (int64_t p = start; p < end && c0 < m; p++) {                           \
                const T_ *restrict w = wt + (int64_t)cols[p] * m;                       \
                for (int64_t c = c0; c < m; c++) o[c] += w[c];                          \
            }                                                                           \
            if (bias)                                                                   \
                for (int64_t c = 0; c < m; c++) o[c] = o[c] + bias[c];                  \
        }                                                                               \
    }

EVENT_SUM(event_sum_f32, float)
EVENT_SUM(event_sum_f64, double)

/* Whether x[0, n) holds no infinity and no NaN (all exponent bits set). */
#define ALL_FINITE(NAME, T_, UT_, EXP)                                                  \
    VECTOR_CLONES static int NAME(const T_ *x, int64_t n)                               \
    {                                                                                   \
        UT_ bad = 0;                                                                    \
        for (int64_t i = 0; i < n; i++) {                                               \
            UT_ b;                                                                      \
            memcpy(&b, x + i, sizeof b);                                                \
            bad |= (UT_)((b & (UT_)(EXP)) == (UT_)(EXP));                               \
        }                                                                               \
        return !bad;                                                                    \
    }

ALL_FINITE(all_finite_f32, float, uint32_t, 0x7f800000u)
ALL_FINITE(all_finite_f64, double, uint64_t, 0x7ff0000000000000ull)

static PyObject *py_all_finite(PyObject *self, PyObject *args)
{
    unsigned long long x;
    long long n;
    int f64, ok;
    if (!PyArg_ParseTuple(args, "KLi", &x, &n, &f64))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    ok = f64 ? all_finite_f64((const double *)x, n) : all_finite_f32((const float *)x, n);
    Py_END_ALLOW_THREADS
    return PyBool_FromLong(ok);
}

static PyObject *py_binary_events(PyObject *self, PyObject *args)
{
    unsigned long long x, out, cols, row_end;
    long long rows, n, cap, count;
    int f64;
    if (!PyArg_ParseTuple(args, "KKKKLLLi", &x, &out, &cols, &row_end, &rows, &n, &cap, &f64))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    count = f64 ? binary_events_f64((const double *)x, (uint8_t *)out, (int32_t *)cols,
                                    (int64_t *)row_end, rows, n, cap)
                : binary_events_f32((const float *)x, (uint8_t *)out, (int32_t *)cols,
                                    (int64_t *)row_end, rows, n, cap);
    Py_END_ALLOW_THREADS
    return PyLong_FromLongLong(count);
}

static PyObject *py_event_sum(PyObject *self, PyObject *args)
{
    unsigned long long cols, row_end, wt, bias, out;
    long long rows, m;
    int f64;
    if (!PyArg_ParseTuple(args, "KKKKKLLi", &cols, &row_end, &wt, &bias, &out, &rows, &m, &f64))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    if (f64)
        event_sum_f64((const int32_t *)cols, (const int64_t *)row_end, (const double *)wt,
                      (const double *)bias, (double *)out, rows, m);
    else
        event_sum_f32((const int32_t *)cols, (const int64_t *)row_end, (const float *)wt,
                      (const float *)bias, (float *)out, rows, m);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

/* Whether 1 <= k1 <= k2 <= n, else a ValueError naming the function. */
static int ranks_ok(const char *name, long long n, long long k1, long long k2)
{
    if (n < 1 || k1 < 1 || k2 < k1 || k2 > n) {
        PyErr_Format(PyExc_ValueError, "%s: needs 1 <= k1 <= k2 <= n", name);
        return 0;
    }
    return 1;
}

static PyObject *py_row_kth2(PyObject *self, PyObject *args)
{
    unsigned long long a, out1, out2;
    long long rows, n, k1, k2;
    int status;
    if (!PyArg_ParseTuple(args, "KLLLLKK", &a, &rows, &n, &k1, &k2, &out1, &out2))
        return NULL;
    if (!ranks_ok("row_kth2", n, k1, k2))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    status = row_kth2((const float *)a, rows, n, k1, k2, (float *)out1, (float *)out2);
    Py_END_ALLOW_THREADS
    if (status) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

static PyObject *py_rule_stats(PyObject *self, PyObject *args)
{
    unsigned long long u, out1, out2, fire;
    long long rows, n, k1, k2;
    int status;
    if (!PyArg_ParseTuple(args, "KLLLLKKK", &u, &rows, &n, &k1, &k2, &out1, &out2, &fire))
        return NULL;
    if (!ranks_ok("rule_stats", n, k1, k2))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    status = rule_stats((const float *)u, rows, n, k1, k2, (float *)out1, (float *)out2, (int64_t *)fire);
    Py_END_ALLOW_THREADS
    if (status) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

static PyObject *py_rule_floors(PyObject *self, PyObject *args)
{
    unsigned long long u, drow, out;
    long long rows, groups, pos;
    double x_q, x_e, ceil;
    if (!PyArg_ParseTuple(args, "KKLLLdddK", &u, &drow, &rows, &groups, &pos, &x_q, &x_e, &ceil, &out))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    rule_floors((const float *)u, (const float *)drow, rows, groups, pos, (float)x_q, (float)x_e,
                (float)ceil, (float *)out);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyObject *py_leaky_scan(PyObject *self, PyObject *args)
{
    unsigned long long x, mem0, mem, spk, uabs, fired;
    long long steps, n;
    double b, thr, gr;
    int reset, f64;
    if (!PyArg_ParseTuple(args, "KKKKKKLLdddii", &x, &mem0, &mem, &spk, &uabs, &fired, &steps, &n,
                          &b, &thr, &gr, &reset, &f64))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    if (f64)
        leaky_scan_f64((const double *)x, (const double *)mem0, (double *)mem, (double *)spk,
                       (double *)uabs, (uint8_t *)fired, steps, n, b, thr, gr, reset);
    else
        leaky_scan_f32((const float *)x, (const float *)mem0, (float *)mem, (float *)spk,
                       (float *)uabs, (uint8_t *)fired, steps, n, (float)b, (float)thr, (float)gr,
                       reset);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyObject *py_reverse_scan(PyObject *self, PyObject *args)
{
    unsigned long long e_dense, e_index, e_val, gmem, resets, gx, carry;
    long long e_count, steps, n;
    double b;
    int f64;
    if (!PyArg_ParseTuple(args, "KKKLKKKKLLdi", &e_dense, &e_index, &e_val, &e_count, &gmem,
                          &resets, &gx, &carry, &steps, &n, &b, &f64))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    if (f64)
        reverse_scan_f64((const double *)e_dense, (const int64_t *)e_index, (const double *)e_val,
                         e_count, (const double *)gmem, (const uint8_t *)resets, (double *)gx,
                         (double *)carry, steps, n, b);
    else
        reverse_scan_f32((const float *)e_dense, (const int64_t *)e_index, (const float *)e_val,
                         e_count, (const float *)gmem, (const uint8_t *)resets, (float *)gx,
                         (float *)carry, steps, n, (float)b);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyObject *py_trace(PyObject *self, PyObject *args)
{
    unsigned long long x, out, carry;
    long long t0, steps, n;
    double b;
    int f64;
    if (!PyArg_ParseTuple(args, "KKKLLLdi", &x, &out, &carry, &t0, &steps, &n, &b, &f64))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    if (f64)
        trace_f64((const double *)x, (double *)out, (double *)carry, t0, steps, n, b);
    else
        trace_f32((const float *)x, (float *)out, (float *)carry, t0, steps, n, (float)b);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"leaky_scan", py_leaky_scan, METH_VARARGS, "Leaky membrane scan (see _scan.c)."},
    {"reverse_scan", py_reverse_scan, METH_VARARGS, "Reverse scan of the Leaky backward."},
    {"trace", py_trace, METH_VARARGS, "Input trace of the sparse weight gradient."},
    {"row_kth2", py_row_kth2, METH_VARARGS, "Two order statistics of every row (adaptive step)."},
    {"rule_stats", py_rule_stats, METH_VARARGS, "Adaptive step: order statistics of |u| and firing counts per row."},
    {"rule_floors", py_rule_floors, METH_VARARGS, "Adaptive step: the channel and entry floors."},
    {"dense_estimate", py_dense_estimate, METH_VARARGS, "The estimate of every entry from its draws."},
    {"compact", py_compact, METH_VARARGS, "Indices and values of the non-zero entries."},
    {"binary_events", py_binary_events, METH_VARARGS, "0/1 values to bytes and events, or -1."},
    {"event_sum", py_event_sum, METH_VARARGS, "Event-driven input current of binary inputs."},
    {"all_finite", py_all_finite, METH_VARARGS, "No infinity and no NaN."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_scan", NULL, -1, methods};

PyMODINIT_FUNC PyInit__scan(void)
{
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    fill_event_tables();
    if (PyModule_AddIntConstant(m, "RESET_SUBTRACT", RESET_SUBTRACT) < 0 ||
        PyModule_AddIntConstant(m, "RESET_ZERO", RESET_ZERO) < 0 ||
        PyModule_AddIntConstant(m, "RESET_NONE", RESET_NONE) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
