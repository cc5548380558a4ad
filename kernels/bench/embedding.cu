/*
 * embedding.cu: the embedding lookup (kernels/embedding.cuh), checked against the table
 * itself and timed, in the manner of llm.c's dev/cuda.
 *
 *   make embedding
 *   ./embedding                              the default shapes (below)
 *   ./embedding [--repeat R] N V C [N V C ...]   tokens, vocabulary size and width of each shape
 *   ./embedding --check [N V C ...]          validation only, no timing (what `make test-gpu` runs)
 *
 * For each shape: a random bf16 table and random ids, the last id (with N > 1) replaced by
 * V, which is out of range; every output element must be the table's bits (a copy), and the
 * out-of-range row NaN (0x7fff). Then the lookup is timed over R runs, each after writing
 * an L2-sized buffer so that the table comes from DRAM (cold L2), and reported as time,
 * GB/s and % of the DRAM peak (bench.cuh).
 *
 * Bytes counted are the compulsory DRAM traffic: 2 bytes read from the table and 2 written
 * per output element (4·N·C), plus the 4-byte ids (4·N).
 */
#include <string.h>

#include "../embedding.cuh"
#include "bench.cuh"

static int run_shape(const int *shape, int repeat, ColdL2 cold) {
    int N = shape[0], vocab = shape[1], C = shape[2];
    size_t nt = (size_t)vocab * C, no = (size_t)N * C;
    unsigned seed = 4321u + (unsigned)N * 31u + (unsigned)C;
    __nv_bfloat16 *table, *out;
    float *htable = random_bf16(&table, nt, -1, 1, &seed);
    int32_t *ids = (int32_t *)bench_malloc((size_t)N * sizeof(int32_t)), *dids;
    for (int n = 0; n < N; n++) {
        seed = seed * 1664525u + 1013904223u;
        ids[n] = (int32_t)(seed % (unsigned)vocab);
    }
    if (N > 1) ids[N - 1] = vocab;  // out of range: a NaN row
    cuda_check(cudaMalloc(&out, no * sizeof(__nv_bfloat16)));
    cuda_check(cudaMalloc(&dids, (size_t)N * sizeof(int32_t)));
    cuda_check(cudaMemcpy(dids, ids, (size_t)N * sizeof(int32_t), cudaMemcpyHostToDevice));

    embedding_forward(out, table, dids, N, vocab, C, 0);
    cuda_check(cudaDeviceSynchronize());
    uint16_t *got = (uint16_t *)bench_malloc(no * sizeof(uint16_t));
    cuda_check(cudaMemcpy(got, out, no * sizeof(uint16_t), cudaMemcpyDeviceToHost));
    size_t bad = 0;
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++) {
            bool valid = ids[n] >= 0 && ids[n] < vocab;
            uint16_t want = valid ? __bfloat16_as_ushort(__float2bfloat16(htable[(size_t)ids[n] * C + c])) : 0x7fff;
            uint16_t have = got[(size_t)n * C + c];
            if (have != want && bad++ < 5)
                printf("  MISMATCH out[%d][%d] (id %d): gpu 0x%04x, expected 0x%04x\n", n, c, ids[n], have, want);
        }
    printf("N %d V %d C %d: %s\n", N, vocab, C, bad ? "MISMATCH" : "every element is the table's (NaN for the bad id)");

    if (repeat > 0)  // then speed (not with --check)
        print_bandwidth("forward",
                        time_cold([&] { embedding_forward(out, table, dids, N, vocab, C, 0); }, repeat, cold),
                        4.0 * no + 4.0 * N);

    free(htable), free(ids), free(got);
    cuda_check(cudaFree(table)), cuda_check(cudaFree(out)), cuda_check(cudaFree(dids));
    return bad ? 1 : 0;
}

int main(int argc, char **argv) {
    BenchArgs a =
        bench_args(argc, argv, 3, 50, "embedding [--repeat R | --check] [N V C ...]   (tokens, vocabulary, width)");
    // with --check, awkward shapes: one token, odd widths (element path), packs
    const int awkward[] = {1, 1, 1, 3, 5, 7, 17, 100, 4096, 64, 1000, 131, 9, 32768, 4104};
    // Mistral-7B v0.3 at 4k and 16k tokens, Nemo at 8k, one token
    const int timed[] = {4096, 32768, 4096, 16384, 32768, 4096, 8192, 131072, 5120, 1, 131072, 5120};
    default_shapes(&a, awkward, timed);
    return run_shapes(&a, run_shape);
}
