// bench_decode.c: tokens per second of KV-cached decoding on the CPU (train/decode.h), the
// speed `chat` answers at, with the weights held as chat holds them.
//
//   ./bench_decode --model DIR [--weights nf4|bf16|f32] [--batch 1,16] [--prompt 128]
//                  [--tokens 64] [--threads N] [--repeat 3]
//
// For each batch size B: B sequences of --prompt random tokens are read (prefill, timed
// apart), then --tokens decoding steps run the B sequences together, each step reading the
// token greedily chosen from the last logits (sample.h's greedy path, as chat does at
// temperature 0). Decode tokens/s = B x steps / time of the steps; the best of --repeat runs
// counts (other work on the machine only slows a run down). Loading is never timed. The
// process's CPU time over the steps is reported too: on a shared machine, a one-thread run's
// tokens per CPU-second estimate what a quiet machine gives better than its wall time does
// (with more threads it counts their waits at barriers as well).
//
// Weight bytes: every step reads each frozen weight (and the LM head) once whatever B, so
// bytes per step / step time is the rate weights stream from memory; it is printed next to
// the read bandwidth measured here (a threaded sum over 1 GiB, best of 3), to say how close
// decoding comes to what memory allows.
#include <omp.h>
#include <stdio.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>

#include "../common/util.h"
#include "decode.h"
#include "matvec.h"
#include "model.h"
#include "sample.h"

typedef struct {
    const char *model, *weights, *batches;
    int prompt, tokens, threads, repeat;
} Options;

static void usage(FILE *f) {
    fprintf(f,
            "usage: bench_decode --model DIR [options]\n"
            "\n"
            "Times KV-cached decoding on the CPU (what chat runs), in tokens per second.\n"
            "\n"
            "  --model DIR       Hugging Face model directory\n"
            "  --weights W       nf4, bf16 or f32 frozen weights (default nf4; the head is bf16 unless f32)\n"
            "  --batch LIST      comma-separated batch sizes (default 1,16)\n"
            "  --prompt N        prompt tokens per sequence (default 128)\n"
            "  --tokens N        decoding steps timed (default 64)\n"
            "  --threads N       OpenMP threads (default: OMP_NUM_THREADS, else every core)\n"
            "  --repeat N        runs per batch size; the fastest counts (default 3)\n");
}

static int positive(const char *s) {
    char *end;
    long v = strtol(s, &end, 10);
    return *s && !*end && v > 0 && v <= 1 << 20 ? (int)v : -1;
}

// Bytes of frozen weights and head one step reads.
static double weight_bytes(const Model *m) {
    double b = 0;
    for (int l = 0; l < m->c.num_hidden_layers; l++)
        for (int p = 0; p < N_PROJ; p++) {
            const Linear *x = &m->layers[l].proj[p];
            double n = (double)x->in * x->out;
            if (x->w) b += 4 * n;
            else if (x->w_bf16) b += 2 * n;
            else b += n / 2 + n / x->q.blocksize * (x->q.double_quant ? 1 : 4);
        }
    return b + (double)m->c.vocab_size * m->c.hidden_size * (m->head ? 4 : 2);
}

// GB/s of a threaded read of 1 GiB of floats, best of 3.
static double read_bandwidth(void) {
    size_t n = (size_t)1 << 28;
    float *x = xmalloc(n * sizeof(float));
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) x[i] = (float)(i & 7);
    double best = 1e30, sum = 0;
    for (int r = 0; r < 3; r++) {
        double t0 = omp_get_wtime(), s = 0;
#pragma omp parallel for schedule(static) reduction(+ : s)
        for (size_t i = 0; i < n; i += 64) {  // 16 lanes x 4, so the loads are vectorised
            float acc[16] = {0};
            for (int j = 0; j < 64; j++) acc[j % 16] += x[i + (size_t)j];
            for (int j = 0; j < 16; j++) s += acc[j];
        }
        double t = omp_get_wtime() - t0;
        best = t < best ? t : best;
        sum += s;
    }
    free(x);
    return sum > 0 ? (double)n * sizeof(float) / best / 1e9 : 0;
}

static double cpu_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

// One run at batch B: prefill seconds, decode seconds, and the CPU seconds of the decode.
static void run(const Model *m, int B, const Options *o, uint64_t *rng, double *prefill, double *decode,
                double *decode_cpu) {
    int V = m->c.vocab_size;
    KvCache *caches = xcalloc((size_t)B, sizeof(KvCache));
    DecodeSeq *seqs = xcalloc((size_t)B, sizeof(DecodeSeq));
    int32_t *prompt = xmalloc((size_t)o->prompt * sizeof(int32_t)), *next = xmalloc((size_t)B * sizeof(int32_t));
    float *logits = xmalloc((size_t)B * V * sizeof(float));
    SampleConfig greedy = {0, 1, 0, 0};
    double t0 = omp_get_wtime();
    for (int b = 0; b < B; b++) {
        kv_cache_init(&caches[b], &m->c, o->prompt + o->tokens + 1);
        for (int i = 0; i < o->prompt; i++) prompt[i] = (int32_t)rng_below(rng, (uint64_t)V);
        Decoder d = decoder_cpu(m);
        decode_prompt(&d, &caches[b], prompt, (size_t)o->prompt, logits + (size_t)b * V);
    }
    double t1 = omp_get_wtime(), c1 = cpu_seconds();
    for (int step = 0; step < o->tokens; step++) {
        for (int b = 0; b < B; b++) {
            next[b] = sample_token(logits + (size_t)b * V, V, &greedy, rng);
            seqs[b] = (DecodeSeq){&caches[b], &next[b], 1};
        }
        decode_forward(m, seqs, B, logits, 0);
    }
    double t2 = omp_get_wtime();
    *prefill = t1 - t0;
    *decode = t2 - t1;
    *decode_cpu = cpu_seconds() - c1;
    for (int b = 0; b < B; b++) kv_cache_free(&caches[b]);
    free(caches), free(seqs), free(prompt), free(next), free(logits);
}

int main(int argc, char **argv) {
    Options o = {.weights = "nf4", .batches = "1,16", .prompt = 128, .tokens = 64, .repeat = 3};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        }
        int *num = !strcmp(a, "--prompt") ? &o.prompt : !strcmp(a, "--tokens") ? &o.tokens
                 : !strcmp(a, "--threads") ? &o.threads : !strcmp(a, "--repeat") ? &o.repeat : NULL;
        if (!v || (!num && strcmp(a, "--model") && strcmp(a, "--weights") && strcmp(a, "--batch"))) {
            fprintf(stderr, "error: unknown option or missing value: %s (see --help)\n", a);
            return 1;
        }
        i++;
        if (num && (*num = positive(v)) < 0) {
            fprintf(stderr, "error: %s '%s': expected a whole positive number\n", a, v);
            return 1;
        }
        if (!strcmp(a, "--model")) o.model = v;
        if (!strcmp(a, "--weights")) o.weights = v;
        if (!strcmp(a, "--batch")) o.batches = v;
    }
    int frozen = !strcmp(o.weights, "nf4") ? FROZEN_NF4 : !strcmp(o.weights, "bf16") ? FROZEN_BF16
               : !strcmp(o.weights, "f32") ? FROZEN_F32 : -1;
    if (!o.model || frozen < 0) {
        fprintf(stderr, "error: %s (see --help)\n", !o.model ? "--model is required" : "--weights must be nf4, bf16 or f32");
        return 1;
    }
    if (o.threads) omp_set_num_threads(o.threads);
    char err[ERR_LEN], desc[512];
    Model m;
    if (model_load(&m, o.model, frozen, err)) {
        fprintf(stderr, "error: %s\n", err);
        return 1;
    }
    if (frozen != FROZEN_F32) model_head_to_bf16(&m);
    config_describe(&m.c, desc, sizeof(desc));
    double bytes = weight_bytes(&m), bw = read_bandwidth();
    printf("bench_decode: %s\n  weights %s%s (%.0f MB read per step), %d threads, %s kernels, prompt %d, %d steps\n"
           "  memory read bandwidth here: %.1f GB/s (threaded sum over 1 GiB)\n",
           desc, o.weights, frozen != FROZEN_F32 ? ", head bf16" : "", bytes / 1e6, omp_get_max_threads(),
           matvec_kernel_name(), o.prompt, o.tokens, bw);
    uint64_t rng = 1;
    char list[256];
    snprintf(list, sizeof(list), "%s", o.batches);
    for (char *tok = strtok(list, ","); tok; tok = strtok(NULL, ",")) {
        int B = positive(tok);
        if (B < 0) {
            fprintf(stderr, "error: --batch '%s': expected whole positive numbers\n", o.batches);
            model_free(&m);
            return 1;
        }
        double best_p = 1e30, best_d = 1e30, best_c = 1e30;
        for (int r = 0; r < o.repeat; r++) {
            double p, d, c;
            run(&m, B, &o, &rng, &p, &d, &c);
            best_p = p < best_p ? p : best_p;
            best_d = d < best_d ? d : best_d;
            best_c = c < best_c ? c : best_c;
        }
        double step = best_d / o.tokens;
        printf("batch %2d: decode %8.1f tokens/s (%.2f ms a step, weights at %.1f GB/s = %.0f%% of the read bandwidth), "
               "%.1f tokens per CPU-second, prefill %.0f tokens/s\n",
               B, B * o.tokens / best_d, 1e3 * step, bytes / step / 1e9, 100 * bytes / step / 1e9 / bw,
               B * o.tokens / best_c, (double)B * o.prompt / best_p);
        fflush(stdout);
    }
    model_free(&m);
    return 0;
}
