/* Optional native kernel for the loop that dominates the key holder's encryption time:
 * fixed-base products h^x = prod_i T[i][digit_i(x)] mod m, which make Paillier obfuscators.
 *
 * Plain products of GMP limb arrays (mpn_mul_n + mpn_tdiv_qr, public GMP API only), so the
 * results are bit-identical to the pure-Python gmpy2 loop it replaces; the win (~1.6x at
 * 2048-bit moduli) is dropping the interpreter and the Python objects between two
 * multiplications, and the GIL while the loop runs. It was measured, not assumed, that the
 * same treatment of the homomorphic-histogram loop (4096-bit products) gains only ~8%: there
 * GMP's multiply and divide dominate, so that loop stays in Python.
 *
 * Numbers cross the boundary as little-endian fixed-width byte strings of `limbs * 8` bytes,
 * so no private CPython API is needed. Every digit is checked before any arithmetic: one out
 * of range raises ValueError.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <gmp.h>
#include <stdint.h>
#include <string.h>

typedef struct {
    mp_size_t limbs;   /* limbs of the modulus (its top limb is nonzero) */
    int window;        /* digit width w in bits */
    int n_windows;     /* rows of the table */
    mp_limb_t *mod;    /* the modulus, `limbs` limbs */
    mp_limb_t *data;   /* n_windows rows of 2^w entries of `limbs` limbs: T[i][d] = base^(d*2^(w*i)) */
} fb_table;

static const char *TABLE_CAPSULE = "hefl.crypto._cmodmul.table";

/* --- limb helpers ------------------------------------------------------------------------ */

static void load_le(mp_limb_t *dst, mp_size_t limbs, const unsigned char *src, Py_ssize_t len)
{
    memset(dst, 0, (size_t)limbs * sizeof(mp_limb_t));
    for (Py_ssize_t i = 0; i < len; i++)
        dst[i / 8] |= (mp_limb_t)src[i] << (8 * (i % 8));
}

static void store_le(unsigned char *dst, const mp_limb_t *src, mp_size_t limbs)
{
    for (mp_size_t i = 0; i < limbs; i++)
        for (int b = 0; b < 8; b++)
            dst[i * 8 + b] = (unsigned char)(src[i] >> (8 * b));
}

/* r = a * b mod m, all `n` limbs; scratch holds 2n (product) + n + 1 (quotient) limbs. */
static inline void mulmod(mp_limb_t *r, const mp_limb_t *a, const mp_limb_t *b,
                          const mp_limb_t *m, mp_size_t n, mp_limb_t *scratch)
{
    mp_limb_t *prod = scratch, *quot = scratch + 2 * n;
    mpn_mul_n(prod, a, b, n);
    mpn_tdiv_qr(quot, r, 0, prod, 2 * n, m, n);
}

/* Parse a modulus given as little-endian bytes; returns its limb count or -1 (error set). */
static mp_size_t modulus_limbs(const Py_buffer *mod)
{
    const unsigned char *p = mod->buf;
    Py_ssize_t len = mod->len;
    while (len > 0 && p[len - 1] == 0)
        len--;
    if (len == 0 || (len == 1 && p[0] == 1)) {
        PyErr_SetString(PyExc_ValueError, "modulus must be > 1");
        return -1;
    }
    return (mp_size_t)((len + 7) / 8);
}

/* --- fixed-base tables ------------------------------------------------------------------- */

static void table_free(PyObject *capsule)
{
    fb_table *t = PyCapsule_GetPointer(capsule, TABLE_CAPSULE);
    if (t) {
        PyMem_RawFree(t->data);
        PyMem_RawFree(t->mod);
        PyMem_RawFree(t);
    }
}

/* table_new(base: bytes, modulus: bytes, n_windows: int, window: int) -> capsule
 * base must already be reduced modulo the modulus. */
static PyObject *table_new(PyObject *self, PyObject *args)
{
    Py_buffer base, mod;
    int n_windows, window;
    if (!PyArg_ParseTuple(args, "y*y*ii", &base, &mod, &n_windows, &window))
        return NULL;
    PyObject *result = NULL;
    fb_table *t = NULL;
    mp_limb_t *scratch = NULL, *g = NULL;
    mp_size_t n = modulus_limbs(&mod);
    if (n < 0)
        goto done;
    if (window < 1 || window > 16 || n_windows < 1 || n_windows > 1 << 16) {
        PyErr_SetString(PyExc_ValueError, "window must be in 1..16 and n_windows in 1..65536");
        goto done;
    }
    if (base.len > n * 8) {
        PyErr_SetString(PyExc_ValueError, "base must be reduced modulo the modulus");
        goto done;
    }
    size_t entries = (size_t)n_windows << window;
    t = PyMem_RawCalloc(1, sizeof(fb_table));
    scratch = PyMem_RawMalloc((3 * n + 1) * sizeof(mp_limb_t));
    g = PyMem_RawMalloc(n * sizeof(mp_limb_t));
    if (t) {
        t->mod = PyMem_RawMalloc(n * sizeof(mp_limb_t));
        t->data = PyMem_RawMalloc(entries * n * sizeof(mp_limb_t));
    }
    if (!t || !scratch || !g || !t->mod || !t->data) {
        PyErr_NoMemory();
        goto done;
    }
    t->limbs = n;
    t->window = window;
    t->n_windows = n_windows;
    load_le(t->mod, n, mod.buf, mod.len);
    load_le(g, n, base.buf, base.len);
    if (mpn_cmp(g, t->mod, n) >= 0) {
        PyErr_SetString(PyExc_ValueError, "base must be reduced modulo the modulus");
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    size_t row_size = (size_t)1 << window;
    for (int i = 0; i < n_windows; i++) {
        mp_limb_t *row = t->data + (size_t)i * row_size * n;
        memset(row, 0, n * sizeof(mp_limb_t));
        row[0] = 1;                                         /* g^0 (the modulus is > 1) */
        for (size_t d = 1; d < row_size; d++)               /* g^d = g^(d-1) * g */
            mulmod(row + d * n, row + (d - 1) * n, g, t->mod, n, scratch);
        mulmod(g, row + (row_size - 1) * n, g, t->mod, n, scratch);  /* next base: g^(2^w) */
    }
    Py_END_ALLOW_THREADS
    result = PyCapsule_New(t, TABLE_CAPSULE, table_free);
    if (result)
        t = NULL;  /* owned by the capsule now */
done:
    if (t) {
        PyMem_RawFree(t->data);
        PyMem_RawFree(t->mod);
        PyMem_RawFree(t);
    }
    PyMem_RawFree(scratch);
    PyMem_RawFree(g);
    PyBuffer_Release(&base);
    PyBuffer_Release(&mod);
    return result;
}

/* table_powers(table, digits: bytes, k: int) -> bytes
 * digits holds count rows of k little-endian uint16 digits (count = len / (2k)); returns count
 * residues of limbs*8 bytes each: prod_i T[i][digits[row][i]] mod m. */
static PyObject *table_powers(PyObject *self, PyObject *args)
{
    PyObject *capsule;
    Py_buffer digits;
    int k;
    if (!PyArg_ParseTuple(args, "Oy*i", &capsule, &digits, &k))
        return NULL;
    PyObject *result = NULL;
    mp_limb_t *scratch = NULL;
    fb_table *t = PyCapsule_GetPointer(capsule, TABLE_CAPSULE);
    if (!t)
        goto done;
    if (k < 1 || k > t->n_windows) {
        PyErr_Format(PyExc_ValueError, "k must be in 1..%d", t->n_windows);
        goto done;
    }
    if (digits.len % (2 * k)) {
        PyErr_SetString(PyExc_ValueError, "digits must hold whole rows of k uint16 values");
        goto done;
    }
    Py_ssize_t count = digits.len / (2 * k);
    const unsigned char *dp = digits.buf;
    unsigned limit = 1u << t->window;
    for (Py_ssize_t j = 0; j < count * k; j++) {
        if ((unsigned)(dp[2 * j] | dp[2 * j + 1] << 8) >= limit) {
            PyErr_Format(PyExc_ValueError, "digit out of range for a %d-bit window", t->window);
            goto done;
        }
    }
    mp_size_t n = t->limbs;
    result = PyBytes_FromStringAndSize(NULL, count * n * 8);
    scratch = PyMem_RawMalloc((4 * n + 1) * sizeof(mp_limb_t));
    if (!result || !scratch) {
        Py_CLEAR(result);
        if (!PyErr_Occurred())
            PyErr_NoMemory();
        goto done;
    }
    unsigned char *out = (unsigned char *)PyBytes_AS_STRING(result);
    Py_BEGIN_ALLOW_THREADS
    mp_limb_t *acc = scratch + 3 * n + 1;
    size_t row_size = (size_t)1 << t->window;
    for (Py_ssize_t r = 0; r < count; r++) {
        const unsigned char *d = dp + 2 * r * k;
        unsigned d0 = d[0] | d[1] << 8;
        memcpy(acc, t->data + (size_t)d0 * n, n * sizeof(mp_limb_t));
        for (int i = 1; i < k; i++) {
            unsigned di = d[2 * i] | d[2 * i + 1] << 8;
            mulmod(acc, acc, t->data + ((size_t)i * row_size + di) * n, t->mod, n, scratch);
        }
        store_le(out + r * n * 8, acc, n);
    }
    Py_END_ALLOW_THREADS
done:
    PyMem_RawFree(scratch);
    PyBuffer_Release(&digits);
    return result;
}

static PyMethodDef methods[] = {
    {"table_new", table_new, METH_VARARGS, "Build a fixed-base table (capsule)."},
    {"table_powers", table_powers, METH_VARARGS, "Products of table entries for digit rows."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_cmodmul",
    "Native modular-product kernels of hefl.crypto (optional; pure-Python fallbacks exist).",
    -1, methods,
};

PyMODINIT_FUNC PyInit__cmodmul(void) { return PyModule_Create(&module); }
