/*
 * train_gpu.cu: QLoRA fine-tuning of a Mistral / Llama model on NVIDIA GPUs, the engine's
 * main program (llm.c's train_gpt2.cu in spirit). train/run.h owns everything around the
 * model, shared with train_cpu (the command line, the data, the run directory, checkpoints
 * and resuming, evaluation and probe answers, the PEFT adapter); train/model_gpu.cuh is the
 * model on the device (memory plan, weights, forward, backward); kernels/comm.cuh the ranks;
 * this file is the step.
 *
 *   ./train_gpu --model DIR --train SHARD... --out RUN_DIR [options]
 *   mpirun -np N ./train_gpu ...            (one process per GPU, one node or several)
 *   ./train_gpu --model DIR|config.json --dry-run [--seq-len T] [--batch B] [--lora-r R] [--memory GB]
 *
 * One optimizer step is train_cpu's: grad_accum micro-batches of B rows x T positions
 * (packed conversations), the loss summed over the step's trained targets and divided by
 * their number, LoRA gradients, clipping by the global norm, AdamW (torch's) with the
 * schedule's learning rate. The arithmetic is mixed precision (model_gpu.cuh): bf16
 * activations and products, fp32 accumulation, statistics, loss, LoRA masters, gradients
 * and optimizer. Runs are deterministic: the same seed and data give the same bits on the
 * same GPU (no atomics in any reduction; cuBLASLt's heuristic returns one algorithm for a
 * given problem), and a run stopped by SIGINT/SIGTERM writes its checkpoint and resumes
 * exactly, with either trainer.
 *
 * Memory. Before anything touches the GPU, the memory plan (model_gpu.cuh) gives the exact
 * bytes for the configuration and settings; the default --recompute is the fastest level
 * whose plan fits the GPU's free memory (or --memory GB), and a run that fits none stops
 * with one line saying what it needed and which --seq-len fits. --dry-run prints the plan
 * for any config.json without a GPU, and the longest --seq-len that fits --memory GB
 * (default 80) at each level. GB here is 10^9 bytes, MiB 2^20.
 *
 * Data parallelism. Under mpirun every rank is one GPU with the whole model and its own
 * share of the data (the dataloader's partition), so a step trains ranks x --batch x
 * --grad-accum rows. The ranks first sum their micro-batches' trained targets, so that every
 * target of the step weighs 1 / (all of them) on every rank; each rank's backward then
 * accumulates its part of the gradient of the whole step's loss, and the last micro-batch
 * sums the parts over the ranks layer by layer as the backward finishes each
 * (model_gpu.cuh, gpu_reduce_layer_grads): every rank then holds the gradient a single GPU
 * would compute for the same rows (summed in another order), the same bits on every rank
 * (comm.cuh), clips by the same norm and takes the same AdamW step. The optimizer is not
 * sharded across the ranks (ZeRO): its state is the LoRA weights and two moments in fp32,
 * 12 bytes per trainable parameter, 0.50 GB for r 16 on all seven projections of
 * Mistral-7B (41.9 M parameters; --dry-run's plan) and 0.13 GB at r 4, beside the 4.1 GB
 * of frozen weights every rank holds whole anyway; sharding would save at most that, and
 * cost a gather of the updated weights every step.
 * Rank 0 writes the run directory (run.h); the others print only errors.
 *
 * Each step prints, llm.c-style, and log.jsonl records: loss, gradient norm, learning rate,
 * milliseconds, tokens per second, MFU (model FLOPs utilisation: the FLOPs per step that
 * step_flops states, over the step's time and the dense BF16 peak of the GPUs) and the peak
 * device memory in use (rank 0's).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "model_gpu.cuh"
extern "C" {
#include "generate.h"
#include "gguf.h"
#include "lora.h"
#include "run.h"
}

// ---------------------------------------------------------------------------------------
// the GPU's own flags

typedef struct {
    int recompute;           // 0, 1, 2; -1: the fastest that fits
    float memory_gb;         // the device memory to plan for; 0: the GPU's free memory
    int dry_run, random_weights;
    const char *lora_impl;   // "cublas" or "kernels"
    float comm_timeout;      // seconds a rank waits for its device before it gives up
} GpuOptions;

static GpuOptions g_opt = {-1, 0.0f, 0, 0, "kernels", 600.0f};

static const RunFlag gpu_flags[] = {
    {"--recompute", "N", FLAG_INT, &g_opt.recompute,
     "activation recompute: 0 keeps every activation (fastest),\n"
     "1 keeps each layer's input and reruns the layer in the\n"
     "backward, 2 also keeps those inputs and the LoRA optimizer\n"
     "state in pinned host memory (least device memory);\n"
     "default: the fastest level that fits"},
    {"--memory", "GB", FLAG_FLOAT, &g_opt.memory_gb,
     "device memory to plan for, in GB (10^9 bytes); default: the\n"
     "GPU's free memory (--dry-run: 80)"},
    {"--dry-run", NULL, FLAG_SWITCH, &g_opt.dry_run,
     "print the memory plan for --model (a model directory, a\n"
     "config.json or a GGUF file) and the longest --seq-len that\n"
     "fits --memory at each recompute level; needs no GPU"},
    {"--random-weights", NULL, FLAG_SWITCH, &g_opt.random_weights,
     "seeded random weights of config.json's shape, made on the\n"
     "GPU, instead of the checkpoint (to measure where there is none)"},
    {"--lora-impl", "IMPL", FLAG_STRING, &g_opt.lora_impl,
     "LoRA products: kernels (kernels/lora.cuh, the projections\n"
     "that share an input in one launch; default) or cublas\n"
     "(cuBLASLt calls, projection by projection; no --lora-dropout)"},
    {"--comm-timeout", "S", FLAG_FLOAT, &g_opt.comm_timeout,
     "under mpirun: a rank that waits S seconds for its device or\n"
     "for the other ranks (a lost or stuck rank) stops the job\n"
     "(default 600)"},
};

static double seconds_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

// ---------------------------------------------------------------------------------------
// FLOPs per step (the numerator of MFU)
//
// Counted per micro-batch of N tokens, P = the frozen projections' weights of all layers
// (P_down the down projections'), a LoRA projection of shape in -> out at rank r:
//   frozen forward        2·P per token
//   recompute (1, 2)      2·(P - P_down) per token (the down projection's frozen product is
//                         not rerun: its output is not needed by the backward)
//   input gradients       2·P per token (dx = dy W; the frozen W gets no gradient)
//   LoRA                  2r(in + out) per projection and token forward, 4r(in + out)
//                         backward (dy B, dB, dA, dx), and with recompute the forward again
//                         but the down projection's u B^T (2r·out)
//   attention             4·D per visible (query, key) pair and query head forward (Q Kᵀ,
//                         P V), 8·D backward (dP, dV, dQ, dK), 4·D again with recompute;
//                         only the visible pairs: causal, window, conversation
//   LM head               2·V·H per trained token forward, 2·V·H backward (dX only)
// The products the kernels do beyond these (our attention backward recomputes S and dP, 7
// products instead of 4; NF4 dequantization; norms, RoPE, SwiGLU) are not counted, as MFU
// counts the model's FLOPs and not the implementation's.

// The (query, key) pairs attention computes for a micro-batch: for each run of one segment
// id (a conversation, or a row's padding) of length n, query i (0-based in the run) sees
// min(i + 1, W) keys.
static double visible_pairs(const int32_t *seg, int N, int window) {
    double pairs = 0;
    for (int t = 0, i = 0; t < N; t++) {
        i = t > 0 && seg[t] == seg[t - 1] ? i + 1 : 0;
        pairs += window > 0 && i + 1 > window ? window : i + 1;
    }
    return pairs;
}

static double step_flops(const GpuModel *m, int N, int64_t trained, double pairs) {
    const ModelConfig *c = &m->c;
    double P = 0, P_down = 0, lora = 0, lora_down_out = 0, r = m->s.lora_r;
    for (int p = 0; p < N_PROJ; p++) {
        Linear shape;
        model_linear_shape(&shape, c, p);
        int out = shape.out, in = shape.in;
        P += (double)out * in;
        if (p == PROJ_DOWN) P_down = (double)out * in;
        if (gpu_has_lora(m, p)) lora += r * (in + out);
        if (gpu_has_lora(m, p) && p == PROJ_DOWN) lora_down_out = r * out;
    }
    double rec = m->s.recompute > 0;
    double frozen = 2 * P + 2 * P + rec * 2 * (P - P_down);
    double adapters = 2 * lora + 4 * lora + rec * 2 * (lora - lora_down_out);
    double attention = c->num_attention_heads * (double)c->head_dim * pairs * (4 + 8 + rec * 4);
    double head = 4.0 * c->vocab_size * c->hidden_size * (double)trained;
    return c->num_hidden_layers * ((frozen + adapters) * N + attention) + head;
}

// ---------------------------------------------------------------------------------------
// the memory plan: its table, and what fits

// The lines of allocation r.
static void print_region(const MemoryPlan *p, int r) {
    int first = 1;
    for (int i = 0; i < p->n; i++) {
        if (p->line[i].region != r) continue;
        printf("  %-16s %-58s %12.2f\n", first ? region_names[r] : "", p->line[i].what,
               (double)p->line[i].bytes / (1 << 20));
        first = 0;
    }
}

static void print_plan(const MemoryPlan *p) {
    printf("  %-16s %-58s %12s\n", "allocation", "tensors", "MiB");
    for (int r = 0; r < N_DEVICE_REGIONS; r++) print_region(p, r);
    size_t total = plan_total(p);
    printf("  %-16s %-58s %12.2f   (%.2f GB, %zu bytes)\n", "total", "", (double)total / (1 << 20), (double)total / 1e9,
           total);
    if (p->load_scratch)
        printf("  (loading the weights stages them in %.2f MiB of the scratch allocation)\n",
               (double)p->load_scratch / (1 << 20));
    print_region(p, REGION_HOST);
}

static size_t plan_bytes(const ModelConfig *c, GpuSettings s, int recompute, int seq_len) {
    s.recompute = recompute;
    s.seq_len = seq_len;
    MemoryPlan p = gpu_memory_plan(c, &s);
    return plan_total(&p);
}

// The longest --seq-len whose plan fits in `bytes` at this level (0: not even 1).
static int longest_fitting(const ModelConfig *c, const GpuSettings *s, int recompute, size_t bytes) {
    int lo = 0, hi = 1;
    const int cap = (1 << 30) / (s->batch > 0 ? s->batch : 1);  // N = B·T stays an int
    while (hi < cap && plan_bytes(c, *s, recompute, hi) <= bytes) lo = hi, hi = hi * 2 < cap ? hi * 2 : cap;
    if (hi == cap && plan_bytes(c, *s, recompute, hi) <= bytes) return hi;
    while (hi - lo > 1) {
        int mid = lo + (hi - lo) / 2;
        if (plan_bytes(c, *s, recompute, mid) <= bytes) lo = mid;
        else hi = mid;
    }
    return lo;
}

// The settings a run of these options plans with.
static GpuSettings settings_of(const RunOptions *o, int recompute) {
    GpuSettings s = {o->batch, o->seq_len, recompute, o->lora_r, o->target_mask,
                     lora_scaling(o->lora_alpha, o->lora_r, o->rslora), 1,
                     strcmp(g_opt.lora_impl, "cublas") ? LORA_KERNELS : LORA_CUBLAS, o->lora_dropout};
    return s;
}

// --dry-run: the plan at the chosen level (the fastest that fits --memory when none is
// chosen), every level's total, and the longest --seq-len that fits at each.
static int dry_run(const RunOptions *o) {
    char err[ERR_LEN], desc[512];
    struct stat sb;
    int json = stat(o->model, &sb) == 0 && S_ISREG(sb.st_mode) && !gguf_is_gguf(o->model);
    ModelConfig c;
    if (json ? config_load(&c, o->model, err) : model_config_load(&c, o->model, err)) {
        fprintf(stderr, "error: %s\n", err);
        return 1;
    }
    double gb = g_opt.memory_gb > 0 ? g_opt.memory_gb : 80.0;
    size_t budget = (size_t)(gb * 1e9);
    GpuSettings s = settings_of(o, 0);
    size_t total[3];
    for (int level = 0; level < 3; level++) total[level] = plan_bytes(&c, s, level, o->seq_len);
    int level = g_opt.recompute;
    if (level < 0) {
        level = 2;
        while (level > 0 && total[level - 1] <= budget) level--;
    }
    s.recompute = level;
    MemoryPlan plan = gpu_memory_plan(&c, &s);
    config_describe(&c, desc, sizeof(desc));
    printf("train_gpu --dry-run: %s\n", desc);
    printf("  batch %d x %d tokens, LoRA r %d on %s (--lora-impl %s), --recompute %d%s\n", o->batch, o->seq_len,
           o->lora_r, o->targets, g_opt.lora_impl, level, g_opt.recompute < 0 ? " (the fastest that fits)" : "");
    print_plan(&plan);
    GpuSettings s2 = s;
    s2.recompute = 2;
    printf("  total at --recompute 0, 1, 2: %.2f, %.2f, %.2f GB (2: and %.2f GB of pinned host memory)\n",
           total[0] / 1e9, total[1] / 1e9, total[2] / 1e9, gpu_memory_plan(&c, &s2).region[REGION_HOST] / 1e9);
    printf("  longest --seq-len in %g GB at --batch %d:", gb, o->batch);
    for (int l = 0; l < 3; l++) printf(" recompute %d: %d%s", l, longest_fitting(&c, &s, l, budget), l < 2 ? "," : "");
    s2.seq_len = longest_fitting(&c, &s, 2, budget);
    printf(" (2: with %.1f GB of pinned host memory)\n", gpu_memory_plan(&c, &s2).region[REGION_HOST] / 1e9);
    return 0;
}

// ---------------------------------------------------------------------------------------
// the run's hooks: evaluation, probe answers, the device state for checkpoints

typedef struct {
    GpuModel *m;
    RunParam *params;
    int n_params;
    int32_t *ids, *zeros, *positions;  // generation's batch, N each
    float *no_weights;
    float *logits;
} GpuRun;

// One micro-batch of the dataloader onto the device; returns its tokens (rows that hold data).
static int upload_batch(GpuModel *m, const Batch *b) {
    int N = b->rows * b->T;
    gpu_set_batch(m, b->inputs, b->targets, b->weights, b->positions, b->segments, N);
    return N;
}

static int hook_evaluate(void *ctx, EvalLoader *ev, double *loss_sum, int64_t *trained) {
    GpuRun *g = (GpuRun *)ctx;
    Batch b;
    batch_init(&b, g->m->s.batch, g->m->s.seq_len);
    *loss_sum = 0, *trained = 0;
    evalloader_rewind(ev);
    int rc = 0;
    while (evalloader_next(ev, &b)) {
        if (run_stop_signal()) {
            rc = -1;
            break;
        }
        *loss_sum += gpu_model_step(g->m, upload_batch(g->m, &b), 1.0f, 0);
        *trained += b.n_trained;
    }
    batch_free(&b);
    return rc;
}

// The next tokens of a prompt, each from the logits of the whole sequence so far (no KV
// cache: probes are short, and this runs every --sample-every steps only).
static int hook_generate(void *ctx, TokenVec *ids, int max_new, int32_t eos_id, float temperature, float top_p,
                         uint64_t *rng) {
    GpuRun *g = (GpuRun *)ctx;
    int V = g->m->c.vocab_size;
    for (int k = 0; k < max_new && (size_t)g->m->N > ids->len; k++) {
        if (run_stop_signal()) return -1;
        int n = (int)ids->len;
        for (int t = 0; t < n; t++) g->ids[t] = ids->ids[t], g->positions[t] = t;
        gpu_set_batch(g->m, g->ids, g->zeros, g->no_weights, g->positions, g->zeros, n);
        gpu_model_last_logits(g->m, n, g->logits);
        SampleConfig sc = {temperature, top_p, 0, 0};
        int32_t next = sample_token(g->logits, V, &sc, rng);
        tokvec_push(ids, next);
        if (next == eos_id) break;
    }
    return 0;
}

static int hook_to_host(void *ctx, char *err) {
    (void)err;
    GpuRun *g = (GpuRun *)ctx;
    for (int i = 0; i < g->n_params; i++) {
        RunParam *q = &g->params[i];
        gpu_lora_get(g->m, q->layer, q->proj, q->is_b, q->p, q->m, q->v, NULL);
    }
    return 0;
}

static void params_to_device(GpuModel *m, const RunParam *params, int n) {
    for (int i = 0; i < n; i++)
        gpu_lora_set(m, params[i].layer, params[i].proj, params[i].is_b, params[i].p, params[i].m, params[i].v);
}

// The run's collectives (run.h's RunComm) over comm.cuh's.
static void ranks_sum(void *ctx, double *x, int n) { comm_sum((Comm *)ctx, x, n); }
static void ranks_max(void *ctx, int *x, int n) { comm_max((Comm *)ctx, x, n); }
static void ranks_broadcast(void *ctx, void *buf, size_t n) { comm_broadcast((Comm *)ctx, buf, n); }
static void ranks_gather(void *ctx, const void *mine, void *all, size_t n) { comm_gather((Comm *)ctx, mine, all, n); }

// ---------------------------------------------------------------------------------------
// the device: is there one, which level fits

static int check_gpu(char *name, size_t name_len, size_t *free_bytes, char *err) {
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess || count == 0) {
        set_error(err, "no CUDA GPU found (%s); train_gpu needs one (train_cpu runs on the CPU; train_gpu --dry-run "
                       "plans without one)",
                  e != cudaSuccess ? cudaGetErrorString(e) : "cudaGetDeviceCount: 0 devices");
        return 1;
    }
    cudaDeviceProp prop;
    size_t total;
    int device = 0;
    cuda_check(cudaGetDevice(&device));
    cuda_check(cudaGetDeviceProperties(&prop, device));
    cuda_check(cudaMemGetInfo(free_bytes, &total));
    snprintf(name, name_len, "%s (sm_%d%d, %.1f GB, %.1f GB free)", prop.name, prop.major, prop.minor, total / 1e9,
             *free_bytes / 1e9);
    return 0;
}

// The level to run at: --recompute when it fits, else the fastest that does; none: 1, and
// err says what is needed and what would fit.
static int choose_recompute(const ModelConfig *c, const RunOptions *o, size_t budget, int *level, char *err) {
    GpuSettings s = settings_of(o, 0);
    size_t total[3];
    for (int l = 0; l < 3; l++) total[l] = plan_bytes(c, s, l, o->seq_len);
    int want = g_opt.recompute;
    if (want >= 0 && total[want] <= budget) {
        *level = want;
        return 0;
    }
    int fits = -1;
    for (int l = 0; l < 3 && fits < 0; l++)
        if (total[l] <= budget) fits = l;
    if (want < 0 && fits >= 0) {
        *level = fits;
        return 0;
    }
    int from = want >= 0 ? want : 2;
    char hint[160];
    if (fits >= 0)
        snprintf(hint, sizeof(hint), "--recompute %d fits (%.2f GB)", fits, total[fits] / 1e9);
    else
        snprintf(hint, sizeof(hint), "--seq-len %d fits at --recompute 2 (--batch %d)",
                 longest_fitting(c, &s, 2, budget), o->batch);
    set_error(err, "out of memory: --seq-len %d --batch %d at --recompute %d needs %.2f GB of device memory, %.2f GB "
                   "are available; %s (train_gpu --dry-run shows the plan)",
              o->seq_len, o->batch, from, total[from] / 1e9, budget / 1e9, hint);
    return 1;
}

// ---------------------------------------------------------------------------------------
// main

int main(int argc, char **argv) {
    RunOptions o;
    RunProgram program = {"train_gpu", "QLoRA fine-tuning on NVIDIA GPUs (mpirun -np N: one process per GPU).", gpu_flags,
                          (int)(sizeof(gpu_flags) / sizeof(gpu_flags[0])), &g_opt.dry_run};
    if (run_parse_args(&o, &program, argc, argv)) return 1;
    const char *bad = g_opt.recompute < -1 || g_opt.recompute > 2 ? "--recompute must be 0, 1 or 2"
                      : g_opt.memory_gb < 0 ? "--memory must be positive"
                      : !(g_opt.comm_timeout > 0) ? "--comm-timeout must be positive"
                      : strcmp(g_opt.lora_impl, "cublas") && strcmp(g_opt.lora_impl, "kernels")
                          ? "--lora-impl must be kernels or cublas"
                      : o.lora_dropout > 0 && !strcmp(g_opt.lora_impl, "cublas")
                          ? "--lora-dropout needs --lora-impl kernels (the cuBLASLt path applies no dropout)"
                      : o.no_nf4 ? "--no-nf4: train_gpu keeps the frozen weights in NF4 (train_cpu has --no-nf4)"
                      : NULL;
    if (bad) {
        fprintf(stderr, "error: %s (see --help)\n", bad);
        return 1;
    }
    if (g_opt.dry_run) return dry_run(&o);

    // the ranks (one, for a plain launch): MPI, this rank's GPU, NCCL (kernels/comm.cuh)
    Comm comm;
    comm_init(&comm, g_opt.comm_timeout);
    if (comm.rank > 0) {  // rank 0 speaks for all; the others print only errors
        int null = open("/dev/null", O_WRONLY);
        if (null >= 0) dup2(null, STDOUT_FILENO), close(null);
    }
    RunComm ranks = {comm.rank, comm.nranks, &comm, ranks_sum, ranks_max, ranks_broadcast, ranks_gather};
    Run run;
    int rc = run_open(&run, &o, &ranks);
    const ModelConfig *c = &run.config;
    char device[320], err[ERR_LEN];
    size_t free_bytes = 0;
    int level = 0, D = c->head_dim;
    if (rc == 0) {
        if (D != 64 && D != 96 && D != 128)
            rc = 1, set_error(err, "%s: head_dim %d: the attention kernel takes head_dim 64, 96 or 128", o.model, D);
        else if (comm.nranks > 1 && o.lora_dropout > 0)  // every rank would draw the same masks
            rc = 1, set_error(err, "--lora-dropout under mpirun with %d ranks: not supported yet", comm.nranks);
        else if (check_gpu(device, sizeof(device), &free_bytes, err) == 0) {
            size_t budget = g_opt.memory_gb > 0 && g_opt.memory_gb * 1e9 < free_bytes ? (size_t)(g_opt.memory_gb * 1e9)
                                                                                      : free_bytes;
            rc = choose_recompute(c, &o, budget, &level, err);
        } else {
            rc = 1;
        }
        rc = run_agree(&run, rc, err);
    }
    if (rc) {
        run_close(&run);
        comm_free(&comm);
        return rc;
    }

    // the model on the device: the plan allocated, the frozen weights streamed in (or drawn)
    GpuModel m;
    GpuSettings s = settings_of(&o, level);
    gpu_model_init(&m, c, &s);
    gpu_model_allocate(&m);
    gpu_model_set_comm(&m, &comm);
    double t0 = seconds_now();
    if (g_opt.random_weights) gpu_model_random(&m, o.seed);
    else rc = gpu_model_load(&m, o.model, err) ? 1 : 0;
    if ((rc = run_agree(&run, rc, err))) {
        gpu_model_free(&m);
        run_close(&run);
        comm_free(&comm);
        return rc;
    }
    cuda_check(cudaDeviceSynchronize());
    double load_seconds = seconds_now() - t0;

    // LoRA: PEFT's initialisation on the host (the same numbers as train_cpu's), host
    // mirrors for checkpoints and export, then the device copies
    Model host;
    model_init_empty(&host, c);
    model_lora_init(&host, o.target_mask, o.lora_r, o.lora_alpha, o.rslora, o.seed);
    int n_params = 0;
    RunParam *params = (RunParam *)xcalloc((size_t)c->num_hidden_layers * N_PROJ * 2, sizeof(RunParam));
    for (int l = 0; l < c->num_hidden_layers; l++)
        for (int p = 0; p < N_PROJ; p++) {
            Linear *lin = &host.layers[l].proj[p];
            if (!lin->A) continue;
            for (int k = 0; k < 2; k++) {
                size_t n = (size_t)o.lora_r * (k ? lin->out : lin->in);
                params[n_params++] = run_lora_param(l, p, k, o.lora_r, lin->in, lin->out, k ? lin->B : lin->A,
                                                    (float *)xcalloc(n, sizeof(float)), (float *)xcalloc(n, sizeof(float)));
            }
        }
    GpuRun g = {&m, params, n_params, NULL, NULL, NULL, NULL, NULL};
    g.ids = (int32_t *)xcalloc((size_t)m.N, sizeof(int32_t));
    g.zeros = (int32_t *)xcalloc((size_t)m.N, sizeof(int32_t));
    g.positions = (int32_t *)xcalloc((size_t)m.N, sizeof(int32_t));
    g.no_weights = (float *)xcalloc((size_t)m.N, sizeof(float));
    g.logits = (float *)xcalloc((size_t)c->vocab_size, sizeof(float));
    RunHooks hooks = {&g, hook_evaluate, hook_generate, hook_to_host};
    rc = run_start(&run, params, n_params, &hooks);  // a resumed run's params come from its checkpoint
    if (rc == 0) {
        params_to_device(&m, params, n_params);
        run_print_config(&run, "train_gpu", c->bnb_4bit ? "NF4 (bitsandbytes checkpoint)" : "NF4");
        printf("  %s; %s weights in %.1f s; --lora-impl %s; --recompute %d%s; memory plan %.2f GB (%.2f GB free):\n",
               device, g_opt.random_weights ? "random" : "loaded", load_seconds, g_opt.lora_impl, level,
               g_opt.recompute < 0 ? " (the fastest that fits)" : "", plan_total(&m.plan) / 1e9, free_bytes / 1e9);
        print_plan(&m.plan);
    }

    // the training loop
    Batch *micro = (Batch *)xcalloc((size_t)o.grad_accum, sizeof(Batch));
    for (int a = 0; a < o.grad_accum; a++) batch_init(&micro[a], o.batch, o.seq_len);
    double peak_flops = bf16_peak();
    size_t peak_used = 0;
    m.dropout_rng = run.state.dropout_rng;  // the masks come from the run's generator (train_cpu's)
    while (rc == 0 && run_next(&run)) {
        double step_start = seconds_now();
        double mine[2] = {0.0, 0.0};  // this rank's trained targets (exact in a double), its failures
        for (int a = 0; a < o.grad_accum && mine[1] == 0; a++) {
            if (dataloader_next(run.dl, &micro[a], err)) fprintf(stderr, "error: %s\n", err), mine[1] = 1;
            else mine[0] += (double)micro[a].n_trained;
        }
        comm_sum(&comm, mine, 2);  // the whole step's, over the ranks
        if (mine[1] > 0) {
            rc = 2;
            break;
        }
        int64_t trained = (int64_t)mine[0];  // every trained target of the step, on every rank, weighs 1 / trained
        cuda_check(cudaMemsetAsync(m.lora_grads, 0, m.lora_n * sizeof(float), m.stream));
        double sums[2] = {0.0, 0.0};  // this rank's loss sum and FLOPs
        for (int a = 0; a < o.grad_accum; a++) {
            int N = upload_batch(&m, &micro[a]);
            sums[0] += gpu_model_step(&m, N, 1.0f / (float)trained, a + 1 < o.grad_accum ? STEP_BACKWARD : STEP_BACKWARD_REDUCE);
            sums[1] += step_flops(&m, N, micro[a].n_trained, visible_pairs(micro[a].segments, N, c->sliding_window));
        }
        comm_sum(&comm, sums, 2);  // the whole step's
        double loss = sums[0] / (double)trained, flops = sums[1];
        // the global gradient norm, clipping folded into AdamW's gradient scale, the update
        // of the fp32 masters and their bf16 copies
        float norm_squared;
        grad_norm_squared(m.norm_squared, m.norm_partial, m.norm_tensors, m.norm_offsets, 1, m.lora_n, m.stream);
        cuda_check(cudaMemcpyAsync(&norm_squared, m.norm_squared, sizeof(float), cudaMemcpyDeviceToHost, m.stream));
        cuda_check(cudaStreamSynchronize(m.stream));
        double norm = sqrt((double)norm_squared);
        float scale = o.clip > 0 ? grad_clip_scale(norm, o.clip) : 1.0f;
        int step = (int)run.state.step + 1;
        float lr = (float)(o.lr * schedule_multiplier(o.schedule_kind, run.state.step, o.warmup, o.steps));
        gpu_lora_update(&m, step, lr, o.weight_decay, scale);
        run.state.dropout_rng = m.dropout_rng;
        double seconds = seconds_now() - step_start;
        size_t free_now, total;
        cuda_check(cudaMemGetInfo(&free_now, &total));
        if (total - free_now > peak_used) peak_used = total - free_now;
        RunLogField extra[] = {{"ms", "%.1f", seconds * 1e3},
                               {"mfu", "%.4f", peak_flops > 0 ? flops / seconds / (peak_flops * comm.nranks) : 0.0},
                               {"peak_memory_gb", "%.3f", peak_used / 1e9}};
        double tokens = (double)comm.nranks * o.grad_accum * o.batch * o.seq_len;
        RunStep st = {loss, lr, norm, trained, tokens, seconds, extra, 3};
        rc = run_step_done(&run, &st);
    }
    rc = rc ? rc : run_finish(&run);

    for (int a = 0; a < o.grad_accum; a++) batch_free(&micro[a]);
    free(micro);
    for (int i = 0; i < n_params; i++) free(params[i].m), free(params[i].v);
    free(params), free(g.ids), free(g.zeros), free(g.positions), free(g.no_weights), free(g.logits);
    model_free(&host);
    gpu_model_free(&m);
    run_close(&run);
    comm_free(&comm);
    return rc;
}
