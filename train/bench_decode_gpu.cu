/*
 * bench_decode_gpu.cu: tokens per second of chat_gpu's KV-cached decoding (train/decode_gpu.cuh)
 * on one GPU, the GPU twin of bench_decode.
 *
 *   ./bench_decode_gpu --model DIR [--random-weights] [--batch 1,32] [--prompt 128]
 *                      [--tokens 64] [--lora-r 16] [--repeat 3]
 *
 * The model is DIR's (config.json and weights; with --random-weights only config.json is
 * read and the weights are drawn on the device, as train_gpu --random-weights draws them),
 * the frozen projections in NF4 as chat_gpu holds them, LoRA of rank --lora-r on all seven
 * projections (random A and B: an adapter's cost; 0 for none). For each batch size B: B
 * sequences of --prompt random tokens are read (prefill, timed apart), then --tokens
 * decoding steps run the B sequences together, each reading the token greedily chosen from
 * the last logits (the logits come back to the host every step, as in chat_gpu). Decode
 * tokens/s = B x steps / time of the steps, the best of --repeat runs.
 *
 * The bound: every step reads each NF4 weight (0.5 bytes and its block's share of the
 * statistics) and the bf16 LM head once, whatever B; weight bytes / step time against the
 * device's DRAM peak (memory clock x bus width) is the % printed. Goal at batch 1: >= 75%.
 */
#include "decode_gpu.cuh"
#include "../kernels/bench/bench.cuh"

extern "C" {
#include "sample.h"
}

#include <time.h>

typedef struct {
    const char *model, *batches;
    int random_weights, prompt, tokens, lora_r, repeat;
} Options;

static void usage(FILE *f) {
    fprintf(f,
            "usage: bench_decode_gpu --model DIR [options]\n"
            "\n"
            "Times chat_gpu's KV-cached decoding on the GPU, in tokens per second.\n"
            "\n"
            "  --model DIR        Hugging Face model directory (config.json, and the weights unless\n"
            "                     --random-weights)\n"
            "  --random-weights   draw the weights on the device (only config.json is read)\n"
            "  --batch LIST       comma-separated batch sizes (default 1,32)\n"
            "  --prompt N         prompt tokens per sequence (default 128)\n"
            "  --tokens N         decoding steps timed (default 64)\n"
            "  --lora-r N         LoRA rank on all seven projections, random matrices (default 16; 0: none)\n"
            "  --repeat N         runs per batch size; the fastest counts (default 3)\n");
}

static int whole(const char *s, int min) {
    char *end;
    long v = strtol(s, &end, 10);
    return *s && !*end && v >= min && v <= 1 << 20 ? (int)v : -1;
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

// Bytes of NF4 weights, statistics and head one step reads.
static double weight_bytes(const ModelConfig *c) {
    double H = c->hidden_size, I = c->intermediate_size, q = (double)c->num_attention_heads * c->head_dim;
    double kv = (double)c->num_key_value_heads * c->head_dim;
    double n = c->num_hidden_layers * (H * q + 2 * H * kv + q * H + 3 * H * I);
    double blocks = n / NF4_BLOCKSIZE;  // codes, an 8-bit absmax a block, an fp32 absmax2 per NF4_DQ_BLOCK blocks
    return n / 2 + blocks + blocks / NF4_DQ_BLOCK * 4 + (double)c->vocab_size * H * 2;
}

// One run at batch B: prefill and decode seconds.
static void run(GpuDecoder *g, int B, const Options *o, uint64_t *rng, double *prefill, double *decode) {
    const ModelConfig *c = &g->m.c;
    int V = c->vocab_size;
    Decoder d = decoder_gpu(g);
    KvCache *caches = (KvCache *)xcalloc((size_t)B, sizeof(KvCache));
    DecodeSeq *seqs = (DecodeSeq *)xcalloc((size_t)B, sizeof(DecodeSeq));
    int32_t *prompt = (int32_t *)xmalloc((size_t)o->prompt * sizeof(int32_t));
    int32_t *next = (int32_t *)xmalloc((size_t)B * sizeof(int32_t));
    float *logits = (float *)xmalloc((size_t)B * V * sizeof(float));
    SampleConfig greedy = {0, 1, 0, 0};
    double t0 = now();
    for (int b = 0; b < B; b++) {
        kv_cache_init(&caches[b], c, o->prompt + o->tokens + 1);
        for (int i = 0; i < o->prompt; i++) prompt[i] = (int32_t)rng_below(rng, (uint64_t)V);
        if (decode_prompt(&d, &caches[b], prompt, (size_t)o->prompt, logits + (size_t)b * V)) {
            fprintf(stderr, "error: the prompt does not fit the cache\n");
            exit(2);
        }
    }
    double t1 = now();
    for (int step = 0; step < o->tokens; step++) {
        for (int b = 0; b < B; b++) {
            next[b] = sample_token(logits + (size_t)b * V, V, &greedy, rng);
            seqs[b] = DecodeSeq{&caches[b], &next[b], 1};
        }
        if (d.step(d.ctx, seqs, B, logits, 0)) {
            fprintf(stderr, "error: a decoding step failed\n");
            exit(2);
        }
    }
    *prefill = t1 - t0;
    *decode = now() - t1;
    for (int b = 0; b < B; b++) gpu_decoder_forget(g, &caches[b]), kv_cache_free(&caches[b]);
    free(caches), free(seqs), free(prompt), free(next), free(logits);
}

int main(int argc, char **argv) {
    Options o = {NULL, "1,32", 0, 128, 64, 16, 3};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        }
        if (!strcmp(a, "--random-weights")) {
            o.random_weights = 1;
            continue;
        }
        int *num = !strcmp(a, "--prompt") ? &o.prompt : !strcmp(a, "--tokens") ? &o.tokens
                 : !strcmp(a, "--lora-r") ? &o.lora_r : !strcmp(a, "--repeat") ? &o.repeat : NULL;
        if (!v || (!num && strcmp(a, "--model") && strcmp(a, "--batch"))) {
            fprintf(stderr, "error: unknown option or missing value: %s (see --help)\n", a);
            return 1;
        }
        i++;
        if (num && (*num = whole(v, num == &o.lora_r ? 0 : 1)) < 0) {
            fprintf(stderr, "error: %s '%s': expected a whole %s number\n", a, v, num == &o.lora_r ? "" : "positive");
            return 1;
        }
        if (!strcmp(a, "--model")) o.model = v;
        if (!strcmp(a, "--batch")) o.batches = v;
    }
    if (!o.model) {
        fprintf(stderr, "error: --model is required (see --help)\n");
        return 1;
    }
    int max_b = 0;
    char list[256];
    snprintf(list, sizeof(list), "%s", o.batches);
    for (char *tok = strtok(list, ","); tok; tok = strtok(NULL, ",")) {
        int B = whole(tok, 1);
        if (B < 0) {
            fprintf(stderr, "error: --batch '%s': expected whole positive numbers\n", o.batches);
            return 1;
        }
        max_b = B > max_b ? B : max_b;
    }
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
        fprintf(stderr, "error: no CUDA GPU found\n");
        return 2;
    }
    char err[ERR_LEN], desc[512];
    ModelConfig c;
    if (model_config_load(&c, o.model, err)) {
        fprintf(stderr, "error: %s\n", err);
        return 1;
    }
    // the LoRA matrices, random (A normal / sqrt(in), B small: an adapter's cost, not its values)
    GpuDecoder *g = (GpuDecoder *)xmalloc(sizeof(GpuDecoder));
    unsigned targets = o.lora_r ? (1u << N_PROJ) - 1 : 0;
    gpu_decoder_init(g, &c, o.lora_r, targets, o.lora_r ? 2.0f : 0.0f, max_b, o.prompt + o.tokens + 1);
    double t0 = now();
    if (o.random_weights) {
        gpu_model_random(&g->m, 1);
    } else if (gpu_model_load(&g->m, o.model, err)) {
        fprintf(stderr, "error: %s\n", err);
        gpu_decoder_free(g);
        free(g);
        return 1;
    }
    uint64_t rng = 1;
    for (int l = 0; l < c.num_hidden_layers && o.lora_r; l++)
        for (int p = 0; p < N_PROJ; p++) {
            const GpuLinear *lin = &g->m.layers[l].proj[p];
            size_t na = (size_t)o.lora_r * lin->in, nb = (size_t)lin->out * o.lora_r;
            float *A = (float *)xmalloc(na * sizeof(float)), *Bm = (float *)xmalloc(nb * sizeof(float));
            for (size_t i = 0; i < na; i++) A[i] = (float)(rng_uniform(&rng) - 0.5) / sqrtf((float)lin->in);
            for (size_t i = 0; i < nb; i++) Bm[i] = (float)(rng_uniform(&rng) - 0.5) * 1e-2f;
            gpu_lora_set(&g->m, l, p, 0, A, NULL, NULL);
            gpu_lora_set(&g->m, l, p, 1, Bm, NULL, NULL);
            free(A), free(Bm);
        }
    cuda_check(cudaDeviceSynchronize());
    double bytes = weight_bytes(&c), peak = dram_peak();
    cudaDeviceProp prop;
    cuda_check(cudaGetDeviceProperties(&prop, 0));
    config_describe(&c, desc, sizeof(desc));
    printf("bench_decode_gpu: %s\n  on %s; weights %s in %.1f s, NF4 (%.1f MB read per step with the bf16 head), "
           "LoRA r %d, prompt %d, %d steps\n  DRAM peak %.0f GB/s (memory clock x bus width)\n",
           desc, prop.name, o.random_weights ? "drawn" : "loaded", now() - t0, bytes / 1e6, o.lora_r, o.prompt,
           o.tokens, peak / 1e9);
    snprintf(list, sizeof(list), "%s", o.batches);
    for (char *tok = strtok(list, ","); tok; tok = strtok(NULL, ",")) {
        int B = whole(tok, 1);
        double best_p = 1e30, best_d = 1e30;
        for (int r = 0; r < o.repeat; r++) {
            double p, d;
            run(g, B, &o, &rng, &p, &d);
            best_p = p < best_p ? p : best_p;
            best_d = d < best_d ? d : best_d;
        }
        double step = best_d / o.tokens;
        printf("batch %2d: decode %8.1f tokens/s (%.2f ms a step, weights at %.0f GB/s = %.0f%% of the DRAM peak), "
               "prefill %.0f tokens/s\n",
               B, B * o.tokens / best_d, 1e3 * step, bytes / step / 1e9, 100 * bytes / step / peak,
               (double)B * o.prompt / best_p);
        fflush(stdout);
    }
    gpu_decoder_free(g);
    free(g);
    return 0;
}
