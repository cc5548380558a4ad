// test_cuda_embedding.cpp: the embedding lookup kernel (kernels/embedding.cuh) in the
// CUDA-on-CPU harness.
//
// The lookup is a copy, so the reference is the table itself: every output row must be the
// bits of table row ids[n], compared as 16-bit patterns (the table is random bits, NaNs,
// infinities and -0 included, so a kernel that converts through float and back, or moves
// the wrong bytes, shows). Shapes: one token, C = 1, C not a multiple of the 8-element pack,
// misaligned table or output (the element-wise path), Mistral's and Nemo's widths, repeated
// ids. Ids outside [0, V) must give a NaN row (0x7fff) without reading the table: the table
// is an exact-size allocation, so a read past it stops the sanitized run.
#include "../kernels/embedding.cuh"
#include "cuda_host/cuda_buffers.h"
#include "cuda_host/cuda_host_testing.h"
#include "test.h"

#include <limits.h>

// A device table of vocab × C random 16-bit patterns at `offset` elements past its base;
// bits gets the same patterns on the host.
static uint16_t *table_random(uint64_t *rng, uint16_t *bits, size_t n, int offset) {
    uint16_t *base;
    cuda_check(cudaMalloc(&base, (n + (size_t)offset) * sizeof(uint16_t)));
    for (size_t i = 0; i < n; i++) bits[i] = (uint16_t)rng_next(rng);
    cuda_check(cudaMemcpy(base + offset, bits, n * sizeof(uint16_t), cudaMemcpyHostToDevice));
    return base;
}

// Runs the lookup of `ids` and counts the output elements that are not the table's bits
// (or 0x7fff for an id outside [0, vocab)).
static int lookup_mismatches(const int32_t *ids, int N, int vocab, int C, int table_offset, int out_offset,
                             uint64_t seed) {
    uint64_t rng = seed;
    size_t nt = (size_t)vocab * C, no = (size_t)N * C;
    uint16_t *table = (uint16_t *)xmalloc(nt * sizeof(uint16_t)), *got = (uint16_t *)xmalloc(no * sizeof(uint16_t));
    uint16_t *table_base = table_random(&rng, table, nt, table_offset);
    Buf out = buf_output(no, out_offset);
    int32_t *dids;
    cuda_check(cudaMalloc(&dids, (size_t)N * sizeof(int32_t)));
    cuda_check(cudaMemcpy(dids, ids, (size_t)N * sizeof(int32_t), cudaMemcpyHostToDevice));
    embedding_forward(out.dev, (const __nv_bfloat16 *)(table_base + table_offset), dids, N, vocab, C, 0);
    cuda_check(cudaMemcpy(got, out.dev, no * sizeof(uint16_t), cudaMemcpyDeviceToHost));
    int bad = 0;
    for (int n = 0; n < N; n++) {
        bool valid = ids[n] >= 0 && ids[n] < vocab;
        for (int c = 0; c < C; c++) {
            uint16_t want = valid ? table[(size_t)ids[n] * C + c] : 0x7fff, have = got[(size_t)n * C + c];
            if (have != want && bad++ < 3)
                printf("  N=%d V=%d C=%d out[%d][%d] (id %d): 0x%04x, expected 0x%04x\n", N, vocab, C, n, c, ids[n],
                       have, want);
        }
    }
    free(table), free(got);
    cuda_check(cudaFree(table_base)), cuda_check(cudaFree(dids));
    buf_free(&out);
    return bad;
}

struct Shape {
    int N, vocab, C, table_offset, out_offset;
};

static const Shape kShapes[] = {
    {1, 1, 1, 0, 0},     {1, 7, 8, 0, 0},     {5, 3, 3, 0, 0},     {9, 11, 37, 0, 0},  {6, 5, 64, 1, 0},
    {6, 5, 64, 0, 3},    {4, 9, 4104, 0, 0},  {3, 6, 4100, 0, 0},  {7, 13, 4096, 0, 0}, {5, 4, 5120, 0, 0},
    {130, 300, 24, 0, 0},
};

TEST(kernel_copies_table_rows) {
    uint64_t seed = 1;
    for (const Shape &s : kShapes) {
        uint64_t rng = seed * 7919;
        int32_t *ids = (int32_t *)xmalloc((size_t)s.N * sizeof(int32_t));
        for (int n = 0; n < s.N; n++) ids[n] = (int32_t)rng_below(&rng, (uint64_t)s.vocab);
        ids[0] = s.vocab - 1;  // the last row, which ends where the allocation ends
        if (s.N > 2) ids[s.N - 1] = 0, ids[1] = ids[2];  // the first row, and a repeated id
        CHECK_INT(lookup_mismatches(ids, s.N, s.vocab, s.C, s.table_offset, s.out_offset, seed++), 0);
        free(ids);
    }
}

// Ids outside [0, V) next to valid ones, on the packed path and on the element-wise one.
TEST(kernel_fills_nan_for_ids_out_of_range) {
    const int32_t ids[] = {-1, 2, 3, INT_MAX, INT_MIN, 0, -7, 4};
    const int N = (int)(sizeof(ids) / sizeof(ids[0])), vocab = 3;
    CHECK_INT(lookup_mismatches(ids, N, vocab, 4096, 0, 0, 21), 0);  // 16-byte packs
    CHECK_INT(lookup_mismatches(ids, N, vocab, 4096, 1, 0, 22), 0);  // misaligned table: elements
    CHECK_INT(lookup_mismatches(ids, N, vocab, 13, 0, 0, 23), 0);
}

int main(void) {
    RUN(kernel_copies_table_rows);
    RUN(kernel_fills_nan_for_ids_out_of_range);
    return test_summary();
}
