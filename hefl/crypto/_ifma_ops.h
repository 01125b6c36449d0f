/* The IFMA-only operations of hefl's native kernel, included once by _cmodmul.c after
 * _ifma.h: homomorphic group sums (encrypted histograms), Horner packing of ciphertexts, and
 * exponentiation with a secret exponent in constant time (decryption). Each raises
 * ValueError where the IFMA path does not apply; the Python side asks first
 * (hefl.crypto._native.ifma_takes) and keeps its gmpy2 loops otherwise. */

/* --- homomorphic group sums (encrypted histograms) ---------------------------------------- */

/* group_sums(cs: bytes, modulus: bytes, ids: bytes, k: int, n_groups: int) -> bytes
 * cs holds count residues of limbs*8 bytes (each below the modulus); ids holds count rows of k
 * int64 group ids in [0, n_groups). Returns k*n_groups residues, column-major by group
 * (column j's group g at j*n_groups + g): the product mod m of the residues whose column-j id
 * is g, 1 for an empty group. Each residue enters Montgomery form once, whatever k is. IFMA
 * path only (odd modulus of at most 4158 bits, a CPU that has it): ValueError otherwise. */
static PyObject *group_sums(PyObject *self, PyObject *args)
{
    Py_buffer cs, mod, ids;
    int k, n_groups;
    if (!PyArg_ParseTuple(args, "y*y*y*ii", &cs, &mod, &ids, &k, &n_groups))
        return NULL;
    PyObject *result = NULL;
    uint64_t *acc = NULL;
    ifma_ctx c;
    if (ifma_begin(&c, &mod, &cs, "cs"))
        goto done;
    Py_ssize_t count = cs.len / c.width;
    if (k < 1 || n_groups < 1 || ids.len != count * k * 8) {
        PyErr_SetString(PyExc_ValueError, "ids must hold k >= 1 int64 ids per residue");
        goto done;
    }
    const int64_t *id = ids.buf;
    for (Py_ssize_t j = 0; j < count * k; j++) {
        if (id[j] < 0 || id[j] >= n_groups) {
            PyErr_SetString(PyExc_ValueError, "group id out of range");
            goto done;
        }
    }
    size_t D = c.D, cells = (size_t)k * n_groups;
    acc = PyMem_RawMalloc(cells * D * sizeof(uint64_t));
    result = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)cells * c.width);
    if (!acc || !result) {
        Py_CLEAR(result);
        PyErr_NoMemory();
        goto done;
    }
    unsigned char *out = (unsigned char *)PyBytes_AS_STRING(result);
    const unsigned char *cp = cs.buf;
    Py_BEGIN_ALLOW_THREADS
    for (size_t i = 0; i < cells; i++)
        memcpy(acc + i * D, c.r1, D * sizeof(uint64_t));  /* 1 in Montgomery form */
    uint64_t xm[8 * IFMA_MAXV];
    for (Py_ssize_t r = 0; r < count; r++) {
        ifma_load(&c, xm, cp + r * c.width);
        for (int j = 0; j < k; j++) {
            uint64_t *a = acc + ((size_t)j * n_groups + (size_t)id[r * k + j]) * D;
            c.amm(a, a, xm, &c.md);
        }
    }
    for (size_t i = 0; i < cells; i++)
        ifma_store(&c, out + i * c.width, acc + i * D);
    Py_END_ALLOW_THREADS
done:
    ifma_end(&c);
    PyMem_RawFree(acc);
    PyBuffer_Release(&cs);
    PyBuffer_Release(&mod);
    PyBuffer_Release(&ids);
    return result;
}

/* --- Horner packing of ciphertexts --------------------------------------------------------- */

/* horner_pack(cs: bytes, modulus: bytes, sizes: bytes, shift_bits: int) -> bytes
 * cs holds residues of limbs*8 bytes (each below the modulus), split in order into groups of
 * the given int64 sizes (each >= 1, summing to the count); per group returns
 * acc <- acc^(2^shift_bits) * c mod m over its members, starting from the first (Horner's
 * rule: the plaintexts shift left and add). The squarings run in Montgomery form. IFMA path
 * only: ValueError otherwise. */
static PyObject *horner_pack(PyObject *self, PyObject *args)
{
    Py_buffer cs, mod, sizes;
    int shift;
    if (!PyArg_ParseTuple(args, "y*y*y*i", &cs, &mod, &sizes, &shift))
        return NULL;
    PyObject *result = NULL;
    ifma_ctx c;
    if (ifma_begin(&c, &mod, &cs, "cs"))
        goto done;
    Py_ssize_t count = cs.len / c.width, groups = sizes.len / 8, total = 0;
    const int64_t *size = sizes.buf;
    if (sizes.len % 8 || shift < 1) {
        PyErr_SetString(PyExc_ValueError, "sizes must be int64 values and shift must be >= 1");
        goto done;
    }
    for (Py_ssize_t g = 0; g < groups && total <= count; g++)
        total += size[g] < 1 || size[g] > count ? count + 1 : (Py_ssize_t)size[g];
    if (total != count) {
        PyErr_SetString(PyExc_ValueError, "group sizes must be >= 1 and add up to the residues");
        goto done;
    }
    result = PyBytes_FromStringAndSize(NULL, groups * c.width);
    if (!result)
        goto done;
    unsigned char *out = (unsigned char *)PyBytes_AS_STRING(result);
    const unsigned char *cp = cs.buf;
    Py_BEGIN_ALLOW_THREADS
    uint64_t acc[8 * IFMA_MAXV], x[8 * IFMA_MAXV];
    Py_ssize_t r = 0;
    for (Py_ssize_t g = 0; g < groups; g++) {
        ifma_load(&c, acc, cp + r++ * c.width);
        for (int64_t i = 1; i < size[g]; i++) {
            ifma_load(&c, x, cp + r++ * c.width);
            for (int b = 0; b < shift; b++)
                c.amm(acc, acc, acc, &c.md);
            c.amm(acc, acc, x, &c.md);
        }
        ifma_store(&c, out + g * c.width, acc);
    }
    Py_END_ALLOW_THREADS
done:
    ifma_end(&c);
    PyBuffer_Release(&cs);
    PyBuffer_Release(&mod);
    PyBuffer_Release(&sizes);
    return result;
}

/* --- exponentiation with a secret exponent (decryption) ---------------------------------------- */

#define POWM_WINDOW 5

/* r = the table entry at index d (of 2^POWM_WINDOW entries of D digits), reading every entry
 * so that the memory access does not depend on d (the exponent is secret). */
static void select_ct(uint64_t *r, const uint64_t *table, unsigned d, size_t D)
{
    memset(r, 0, D * sizeof(uint64_t));
    for (unsigned i = 0; i < 1u << POWM_WINDOW; i++) {
        uint64_t mask = 0 - (uint64_t)(((i ^ d) - 1u) >> 31 & 1u);  /* all ones iff i == d */
        for (size_t j = 0; j < D; j++)
            r[j] |= table[i * D + j] & mask;
    }
}

/* powm_ct(bases: bytes, exponent: bytes, modulus: bytes) -> bytes
 * bases holds residues of limbs*8 bytes (each below the modulus); exponent is little-endian.
 * Returns base^exponent mod m for each: a fixed 5-bit window over every exponent bit with
 * constant-time table selection, in Montgomery form. IFMA path only: ValueError otherwise. */
static PyObject *powm_ct(PyObject *self, PyObject *args)
{
    Py_buffer bs, ex, mod;
    if (!PyArg_ParseTuple(args, "y*y*y*", &bs, &ex, &mod))
        return NULL;
    PyObject *result = NULL;
    uint64_t *table = NULL;
    ifma_ctx c;
    if (ifma_begin(&c, &mod, &bs, "bases"))
        goto done;
    Py_ssize_t count = bs.len / c.width;
    size_t D = c.D, ebits = (size_t)ex.len * 8, entries = (size_t)1 << POWM_WINDOW;
    table = PyMem_RawMalloc(entries * D * sizeof(uint64_t));
    result = PyBytes_FromStringAndSize(NULL, count * c.width);
    if (!table || !result) {
        Py_CLEAR(result);
        PyErr_NoMemory();
        goto done;
    }
    unsigned char *out = (unsigned char *)PyBytes_AS_STRING(result);
    const unsigned char *bp = bs.buf, *ep = ex.buf;
    size_t top = (ebits + POWM_WINDOW - 1) / POWM_WINDOW * POWM_WINDOW;
    Py_BEGIN_ALLOW_THREADS
    uint64_t acc[8 * IFMA_MAXV], pick[8 * IFMA_MAXV];
    for (Py_ssize_t r = 0; r < count; r++) {
        memcpy(table, c.r1, D * sizeof(uint64_t));  /* base^0 = R */
        ifma_load(&c, table + D, bp + r * c.width);  /* base * R */
        for (size_t i = 2; i < entries; i++)
            c.amm(table + i * D, table + (i - 1) * D, table + D, &c.md);
        memcpy(acc, c.r1, D * sizeof(uint64_t));
        for (size_t bit = top; bit > 0; bit -= POWM_WINDOW) {
            unsigned d = 0;
            for (size_t e = bit; e > bit - POWM_WINDOW; e--)  /* bits e-1, high first */
                d = d << 1 | (e - 1 < ebits ? (ep[(e - 1) / 8] >> ((e - 1) % 8)) & 1u : 0u);
            for (int sq = 0; sq < POWM_WINDOW; sq++)
                c.amm(acc, acc, acc, &c.md);
            select_ct(pick, table, d, D);
            c.amm(acc, acc, pick, &c.md);
        }
        ifma_store(&c, out + r * c.width, acc);
    }
    Py_END_ALLOW_THREADS
done:
    ifma_end(&c);
    PyMem_RawFree(table);
    PyBuffer_Release(&bs);
    PyBuffer_Release(&ex);
    PyBuffer_Release(&mod);
    return result;
}
