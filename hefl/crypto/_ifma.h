/* AVX-512 IFMA arithmetic of hefl's native kernel, included once by _cmodmul.c after its limb
 * helpers (load_le, store_le, modulus_limbs): numbers in radix 2^52 and Montgomery form,
 * almost-Montgomery multiplication, conversions, and the context the IFMA-only operations of
 * _ifma_ops.h share. Compiled for x86-64 only; elsewhere ifma_cpu() is 0 and nothing here
 * runs. */

/* --- AVX-512 IFMA: almost-Montgomery multiplication in radix 2^52 ------------------------
 * A residue is D = 8*V digits of 52 bits, one per 64-bit lane (V vectors). With R = 2^(52*D)
 * and 4m < R, inputs below 2m give an output a*b/R mod m below 2m; multiplying by 1 at the
 * end gives the canonical residue. Word-serial: for each digit a_i, add a_i*b, then y*m with
 * y making the lowest digit zero, then shift one digit down (the high halves of the products
 * land one digit up, i.e. in place after the shift). Lanes hold unreduced sums < 2^60. */

#define MASK52 ((1ULL << 52) - 1)
#define IFMA_MAXV 10  /* up to 4160-bit numbers: n^2 of a 2048-bit key with room for 4m < R */

typedef struct {
    int v;                        /* vectors of 8 digits */
    uint64_t k0;                  /* -m^-1 mod 2^52 */
    uint64_t m[8 * IFMA_MAXV];    /* the modulus, D digits */
    uint64_t one[8 * IFMA_MAXV];  /* the number 1, to leave Montgomery form */
} ifma_mod;

typedef void (*amm_fn)(uint64_t *r, const uint64_t *a, const uint64_t *b, const ifma_mod *md);

#ifdef HAVE_IFMA_KERNEL
__attribute__((target("avx512f,avx512ifma"), always_inline)) static inline void
amm_v(uint64_t *r, const uint64_t *a, const uint64_t *b, const ifma_mod *md, const int V)
{
    __m512i acc[IFMA_MAXV], B[IFMA_MAXV], M[IFMA_MAXV];
    const __m512i zero = _mm512_setzero_si512();
#pragma GCC unroll 10
    for (int j = 0; j < V; j++) {
        acc[j] = zero;
        B[j] = _mm512_loadu_si512(b + 8 * j);
        M[j] = _mm512_loadu_si512(md->m + 8 * j);
    }
    for (int i = 0; i < 8 * V; i++) {
        __m512i ai = _mm512_set1_epi64((long long)a[i]);
#pragma GCC unroll 10
        for (int j = 0; j < V; j++)
            acc[j] = _mm512_madd52lo_epu64(acc[j], ai, B[j]);
        uint64_t t0 = (uint64_t)_mm_cvtsi128_si64(_mm512_castsi512_si128(acc[0]));
        __m512i y = _mm512_set1_epi64((long long)((t0 * md->k0) & MASK52));
#pragma GCC unroll 10
        for (int j = 0; j < V; j++)
            acc[j] = _mm512_madd52lo_epu64(acc[j], y, M[j]);
        __m512i carry = _mm512_srli_epi64(acc[0], 52);  /* lane 0 is now a multiple of 2^52 */
#pragma GCC unroll 10
        for (int j = 0; j < V - 1; j++)
            acc[j] = _mm512_alignr_epi64(acc[j + 1], acc[j], 1);
        acc[V - 1] = _mm512_alignr_epi64(zero, acc[V - 1], 1);
        acc[0] = _mm512_mask_add_epi64(acc[0], 1, acc[0], carry);
#pragma GCC unroll 10
        for (int j = 0; j < V; j++) {
            acc[j] = _mm512_madd52hi_epu64(acc[j], ai, B[j]);
            acc[j] = _mm512_madd52hi_epu64(acc[j], y, M[j]);
        }
    }
    uint64_t out[8 * IFMA_MAXV], c = 0;
#pragma GCC unroll 10
    for (int j = 0; j < V; j++)
        _mm512_storeu_si512(out + 8 * j, acc[j]);
    for (int i = 0; i < 8 * V; i++) {
        uint64_t x = out[i] + c;
        r[i] = x & MASK52;
        c = x >> 52;
    }
}

#define AMM(V)                                                                               \
    __attribute__((target("avx512f,avx512ifma"))) static void amm##V(                        \
        uint64_t *r, const uint64_t *a, const uint64_t *b, const ifma_mod *md)                 \
    {                                                                                        \
        amm_v(r, a, b, md, V);                                                               \
    }
AMM(1) AMM(2) AMM(3) AMM(4) AMM(5) AMM(6) AMM(7) AMM(8) AMM(9) AMM(10)
static const amm_fn AMM_BY_V[IFMA_MAXV + 1] = {
    NULL, amm1, amm2, amm3, amm4, amm5, amm6, amm7, amm8, amm9, amm10};

static int ifma_cpu(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512ifma");
}
#else  /* not x86-64: the GMP and gmpy2 paths only */
static const amm_fn AMM_BY_V[IFMA_MAXV + 1] = {NULL};
static int ifma_cpu(void) { return 0; }
#endif

/* Vectors needed for an odd modulus of `n` limbs, or 0 when the IFMA path cannot take it. */
static int ifma_vectors(const mp_limb_t *m, mp_size_t n)
{
    if (!(m[0] & 1))
        return 0;
    size_t bits = (size_t)n * 64 - (size_t)__builtin_clzll(m[n - 1]);
    int v = (int)((bits + 2 + 415) / 416);  /* 52 * 8 * v >= bits + 2, i.e. 4m < R */
    return v <= IFMA_MAXV ? v : 0;
}

/* limbs (n, little-endian 64-bit) <-> D digits of 52 bits; the value must fit both widths */
static void limbs_to52(uint64_t *d, int D, const mp_limb_t *x, mp_size_t n)
{
    for (int i = 0; i < D; i++) {
        size_t bit = (size_t)i * 52, w = bit / 64, s = bit % 64;
        uint64_t lo = w < (size_t)n ? x[w] >> s : 0;
        uint64_t hi = (s > 12 && w + 1 < (size_t)n) ? x[w + 1] << (64 - s) : 0;
        d[i] = (lo | hi) & MASK52;
    }
}

static void limbs_from52(mp_limb_t *x, mp_size_t n, const uint64_t *d, int D)
{
    memset(x, 0, (size_t)n * sizeof(mp_limb_t));
    for (int i = 0; i < D; i++) {
        size_t bit = (size_t)i * 52, w = bit / 64, s = bit % 64;
        if (w < (size_t)n)
            x[w] |= d[i] << s;
        if (s > 12 && w + 1 < (size_t)n)
            x[w + 1] |= d[i] >> (64 - s);
    }
}

/* 2^(52*D*power) mod m as digits (power 1: R, the Montgomery form of 1; power 2: R^2). */
static int r_power_digits(uint64_t *d, int D, int power, const mp_limb_t *m, mp_size_t n)
{
    size_t bit = (size_t)52 * D * power;
    mp_size_t len = (mp_size_t)(bit / 64 + 1);
    mp_limb_t *num = PyMem_RawCalloc(2 * (size_t)len + 1, sizeof(mp_limb_t));  /* + quotient */
    mp_limb_t *rem = PyMem_RawMalloc((size_t)n * sizeof(mp_limb_t));
    if (!num || !rem) {
        PyMem_RawFree(num);
        PyMem_RawFree(rem);
        return -1;
    }
    num[bit / 64] = (mp_limb_t)1 << (bit % 64);
    mpn_tdiv_qr(num + len, rem, 0, num, len, m, n);
    limbs_to52(d, D, rem, n);
    PyMem_RawFree(num);
    PyMem_RawFree(rem);
    return 0;
}

static void ifma_setup(ifma_mod *md, int v, const mp_limb_t *m, mp_size_t n)
{
    memset(md, 0, sizeof *md);
    md->v = v;
    limbs_to52(md->m, 8 * v, m, n);
    uint64_t inv = 1;  /* Newton: m0 * inv = 1 mod 2^64 after 6 steps */
    for (int i = 0; i < 6; i++)
        inv *= 2 - m[0] * inv;
    md->k0 = (0 - inv) & MASK52;
    md->one[0] = 1;
}

/* Leave Montgomery form: a (below 2m, overwritten) -> the residue a/R mod m as n limbs. */
static void ifma_out(mp_limb_t *out, mp_size_t n, uint64_t *a, const ifma_mod *md)
{
    size_t D = (size_t)8 * md->v;
    uint64_t borrow = 0, diff[8 * IFMA_MAXV];
    AMM_BY_V[md->v](a, a, md->one, md);  /* now <= m */
    for (size_t i = 0; i < D; i++) {     /* a - m, kept only if it does not go negative */
        uint64_t t = a[i] - md->m[i] - borrow;
        diff[i] = t & MASK52;
        borrow = t >> 63;
    }
    limbs_from52(out, n, borrow ? a : diff, (int)D);
}

/* --- what the IFMA-only operations share ---------------------------------------------------- */

typedef struct {
    mp_size_t n;       /* limbs of the modulus */
    Py_ssize_t width;  /* bytes per residue, n * 8 */
    mp_limb_t *m;      /* the modulus, n limbs */
    mp_limb_t *x;      /* scratch, n limbs */
    size_t D;          /* digits per number, 8 * md.v */
    ifma_mod md;
    amm_fn amm;
    uint64_t r1[8 * IFMA_MAXV], r2[8 * IFMA_MAXV];  /* R and R^2 mod m */
} ifma_ctx;

/* Take `mod` for the IFMA path and check that `res` holds whole residues below it (`what`
 * names them in errors). Returns 0, or -1 with an exception set; ifma_end releases it. */
static int ifma_begin(ifma_ctx *c, const Py_buffer *mod, const Py_buffer *res, const char *what)
{
    c->m = NULL;
    c->n = modulus_limbs(mod);
    if (c->n < 0)
        return -1;
    c->width = c->n * 8;
    if (res->len % c->width) {
        PyErr_Format(PyExc_ValueError, "%s must hold whole residues", what);
        return -1;
    }
    c->m = PyMem_RawMalloc((size_t)c->n * 2 * sizeof(mp_limb_t));
    if (!c->m) {
        PyErr_NoMemory();
        return -1;
    }
    c->x = c->m + c->n;
    load_le(c->m, c->n, mod->buf, mod->len);
    int v = ifma_cpu() ? ifma_vectors(c->m, c->n) : 0;
    if (!v) {
        PyErr_SetString(PyExc_ValueError, "no IFMA path for this modulus on this CPU");
        return -1;
    }
    const unsigned char *p = res->buf;
    for (Py_ssize_t i = 0; i < res->len; i += c->width) {
        load_le(c->x, c->n, p + i, c->width);
        if (mpn_cmp(c->x, c->m, c->n) >= 0) {
            PyErr_Format(PyExc_ValueError, "%s: a residue is not reduced modulo the modulus",
                         what);
            return -1;
        }
    }
    c->D = (size_t)8 * v;
    if (r_power_digits(c->r1, (int)c->D, 1, c->m, c->n) ||
        r_power_digits(c->r2, (int)c->D, 2, c->m, c->n)) {
        PyErr_NoMemory();
        return -1;
    }
    ifma_setup(&c->md, v, c->m, c->n);
    c->amm = AMM_BY_V[v];
    return 0;
}

static void ifma_end(ifma_ctx *c)
{
    PyMem_RawFree(c->m);
    c->m = NULL;
}

/* dst = the residue at src (width bytes) in Montgomery form, as digits */
static void ifma_load(ifma_ctx *c, uint64_t *dst, const unsigned char *src)
{
    load_le(c->x, c->n, src, c->width);
    limbs_to52(dst, (int)c->D, c->x, c->n);
    c->amm(dst, dst, c->r2, &c->md);
}

/* the residue a (Montgomery form, overwritten) written to dst as width bytes */
static void ifma_store(ifma_ctx *c, unsigned char *dst, uint64_t *a)
{
    ifma_out(c->x, c->n, a, &c->md);
    store_le(dst, c->x, c->n);
}
