// test_nf4.c: NF4 quantization against bitsandbytes, bit for bit.
//
// The fixtures in test/fixtures/nf4/ were written by scripts/nf4_fixtures.py from
// bitsandbytes 0.50.2 (CPU backend) and torch 2.15.0: for each weight matrix, the packed
// codes and absmax of quantize_4bit(nf4) without and with double quantization, the
// dynamic map, and dequantize_4bit's output. Every byte and every float must agree exactly,
// except the double-quantization offset (a float32 mean whose value depends on torch's
// summation order): ours may differ from torch's by at most one unit in the last place,
// and the codes are then compared given torch's offset. Rows of a quantized weight read
// piece by piece (nf4_weight_row) equal the whole dequantized matrix.
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "../common/half.h"
#include "../train/nf4.h"
#include "../train/safetensors.h"
#include "test.h"

static const StTensor *need(const SafeTensors *st, const char *name) {
    const StTensor *t = st_find(st, name);
    if (!t) printf("  %s: no tensor %s\n", st->path, name);
    return t;
}

static int same_bytes(const char *what, const void *a, const void *b, size_t n) {
    if (memcmp(a, b, n) == 0) return 1;
    for (size_t i = 0; i < n; i++)
        if (((const uint8_t *)a)[i] != ((const uint8_t *)b)[i]) {
            printf("  %s: first difference at byte %zu of %zu (0x%02x vs 0x%02x)\n", what, i, n,
                   ((const uint8_t *)a)[i], ((const uint8_t *)b)[i]);
            break;
        }
    return 0;
}

static void check_fixture(const char *dir, const char *file, int blocksize) {
    char path[4096], err[ERR_LEN];
    snprintf(path, sizeof(path), "%s/%s", dir, file);
    SafeTensors st;
    if (st_open(&st, path, err)) {
        printf("  %s\n", err);
        CHECK(0);
        return;
    }
    const StTensor *w = need(&st, "w"), *pp = need(&st, "plain.packed"), *pa = need(&st, "plain.absmax"),
                   *dp = need(&st, "dq.packed"), *dqa = need(&st, "dq.qabsmax"), *da2 = need(&st, "dq.absmax2"),
                   *doff = need(&st, "dq.offset"), *dcode = need(&st, "dq.code"), *deq = need(&st, "dequant");
    if (!w || !pp || !pa || !dp || !dqa || !da2 || !doff || !dcode || !deq) { CHECK(0); st_close(&st); return; }
    size_t n = (size_t)w->numel, nb = (n + (size_t)blocksize - 1) / (size_t)blocksize;
    float *x = st_to_f32(w), *absmax = malloc(nb * 4), *ref_code = st_to_f32(dcode), code[256];
    uint8_t *packed = malloc(n / 2 + 1), *qabsmax = malloc(nb);
    float *absmax2 = malloc((nb / 256 + 1) * 4), *back = malloc(nb * 4), *out = malloc(n * 4);

    nf4_quantize(x, n, blocksize, packed, absmax);
    CHECK(same_bytes("packed codes", packed, pp->data, pp->nbytes) && pp->nbytes == (n + 1) / 2);
    CHECK(same_bytes("absmax", absmax, pa->data, pa->nbytes) && pa->nbytes == nb * 4);
    CHECK(same_bytes("double-quantization packed codes", packed, dp->data, dp->nbytes));

    nf4_dynamic_map(code);
    CHECK(same_bytes("dynamic map", code, ref_code, 256 * 4));
    float ref_offset;
    memcpy(&ref_offset, doff->data, 4);
    float offset = nf4_absmax_mean(absmax, nb);
    if (fabsf(offset - ref_offset) > fabsf(nextafterf(ref_offset, INFINITY) - ref_offset)) {
        printf("  offset %.9g vs bitsandbytes %.9g: more than 1 ulp apart\n", offset, ref_offset);
        CHECK(0);
    }
    nf4_quantize_absmax(absmax, nb, ref_offset, code, qabsmax, absmax2);
    CHECK(same_bytes("qabsmax", qabsmax, dqa->data, dqa->nbytes) && dqa->nbytes == nb);
    CHECK(same_bytes("absmax2", absmax2, da2->data, da2->nbytes));

    // dequantize through the double-quantized statistics, rounded to the weight's dtype as
    // bitsandbytes returns it
    nf4_dequantize_absmax(qabsmax, absmax2, nb, ref_offset, code, back);
    nf4_dequantize(packed, back, n, blocksize, out);
    float *want = st_to_f32(deq);
    for (size_t i = 0; i < n; i++) {
        if (w->dtype == ST_BF16) out[i] = bf16_to_f32(f32_to_bf16(out[i]));
        if (w->dtype == ST_F16) out[i] = (float)(_Float16)out[i];
    }
    CHECK(same_bytes("dequantized weights", out, want, n * 4));
    free(want);
    free(x), free(absmax), free(ref_code), free(packed), free(qabsmax), free(absmax2), free(back), free(out);
    st_close(&st);
}

TEST(bf16_96x40_blocksize64) { check_fixture("test/fixtures/nf4", "bf16_96x40.safetensors", 64); }
TEST(f32_257x64_zero_and_huge_blocks) { check_fixture("test/fixtures/nf4", "f32_257x64.safetensors", 64); }
TEST(f32_values_on_midpoints) { check_fixture("test/fixtures/nf4", "f32_midpoints.safetensors", 64); }
TEST(f16_odd_tail_blocksize128) { check_fixture("test/fixtures/nf4", "f16_odd_tail.safetensors", 128); }

// nf4_weight_row (pieces of rows, as matmul_rows asks for them) against the whole matrix
// from nf4_weight_dequantize, which the fixtures tie to bitsandbytes: every row cut at odd and
// even columns into pieces of 1 to 37 elements, so pieces start inside bytes and blocks and
// cross block edges (40 columns and blocks of 64 cross rows too).
static void check_rows(const char *file, int blocksize) {
    char path[4096], err[ERR_LEN];
    snprintf(path, sizeof(path), "test/fixtures/nf4/%s", file);
    SafeTensors st;
    if (st_open(&st, path, err)) {
        printf("  %s\n", err);
        CHECK(0);
        return;
    }
    const StTensor *w = need(&st, "w");
    if (!w || w->ndim != 2) { CHECK(0); st_close(&st); return; }
    int64_t rows = w->shape[0], cols = w->shape[1];
    float *x = st_to_f32(w), *whole = malloc((size_t)(rows * cols) * 4), *piece = malloc((size_t)cols * 4);
    float *absmax = malloc(((size_t)(rows * cols) / (size_t)blocksize + 1) * 4);
    Nf4Weight q;
    nf4_weight_quantize(&q, x, rows, cols, blocksize, 1);
    nf4_weight_dequantize(&q, whole);
    nf4_weight_absmax(&q, absmax);
    int bad = 0, len = 1;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c0 = r % 3; c0 < cols; c0 += len, len = len % 37 + 1) {
            int n = c0 + len <= cols ? len : (int)(cols - c0);
            nf4_weight_row(&q, absmax, r, c0, n, piece);
            if (memcmp(piece, whole + r * cols + c0, (size_t)n * 4) != 0 && bad++ == 0)
                printf("  %s: row %lld columns %lld..%lld differ\n", file, (long long)r, (long long)c0, (long long)(c0 + n));
        }
    CHECK_INT(bad, 0);
    nf4_weight_free(&q);
    free(x), free(whole), free(piece), free(absmax);
    st_close(&st);
}

TEST(rows_equal_whole_dequantization) {
    check_rows("bf16_96x40.safetensors", 64);
    check_rows("f32_257x64.safetensors", 64);
    check_rows("f16_odd_tail.safetensors", 128);
}

// The 16 NF4 values come from the normal distribution's quantiles; independent of the
// fixtures, the table must be sorted, symmetric in range and contain an exact zero.
TEST(nf4_table_shape) {
    CHECK(nf4_code[0] == -1.0f && nf4_code[7] == 0.0f && nf4_code[15] == 1.0f);
    for (int i = 0; i < 15; i++) CHECK(nf4_code[i] < nf4_code[i + 1]);
}

int main(void) {
    RUN(bf16_96x40_blocksize64);
    RUN(f32_257x64_zero_and_huge_blocks);
    RUN(f32_values_on_midpoints);
    RUN(f16_odd_tail_blocksize128);
    RUN(rows_equal_whole_dequantization);
    RUN(nf4_table_shape);
    return test_summary();
}
