/*
 * model_gpu.cuh: the Mistral / Llama decoder with LoRA on one GPU: where every tensor lives
 * (the memory plan), loading the frozen weights, and the forward and backward passes. The
 * same math as the CPU reference train/model.c (its header states it), in mixed precision:
 *
 *   frozen projections  NF4 with double-quantized statistics (bitsandbytes' layout, bit-exact
 *                       with train/nf4.c), dequantized into one reused bf16 buffer right
 *                       before each product (kernels/nf4.cuh), products by cuBLASLt
 *                       (kernels/matmul.cuh): bf16 inputs, fp32 accumulation
 *   embeddings, norms,  bf16
 *   LM head
 *   activations         bf16; RMSNorm's rstd, attention's log-sum-exp, the loss fp32
 *   LoRA                fp32 masters A, B (and fp32 gradients and AdamW moments when
 *                       training) with bf16 copies that the products read, refreshed by
 *                       the optimizer step (kernels/adamw.cuh); the products by
 *                       kernels/lora.cuh (the projections that share an input, q,k,v and
 *                       gate,up, as one group) or, with LORA_CUBLAS, by cuBLASLt calls
 *
 * Memory plan (llm.c's approach): every byte the model uses on the device comes from four
 * allocations whose sizes follow from the configuration and the settings alone, computed
 * before anything is allocated by the same function that later carves them into tensors
 * (gpu_model_layout): the frozen weights, the LoRA state, the activations, and a scratch
 * allocation (the dequantized weight, cuBLASLt's workspace, the cross-entropy's logits,
 * the backward's gradient buffers; while the weights load, the same bytes stage them); at
 * recompute 2 a fifth, of pinned host memory. So `train_gpu --dry-run` prints the plan for
 * any config.json without a GPU, and what the program allocates is that plan, byte for
 * byte. Each tensor starts on a 256-byte boundary (every kernel's 16-byte packed loads, and
 * cuBLASLt's best alignment).
 *
 * Activation recompute, --recompute (llm.c's idea; the levels are ours), for N = B·T
 * tokens of a micro-batch:
 *   0  every layer keeps what its backward needs (about 17 bf16 values per token and hidden
 *      unit at Mistral's shapes, the MLP's 3 x 3.5 of them): fastest, most memory;
 *   1  every layer keeps only its input x_in [N, H]; the backward runs the layer's forward
 *      again (into one layer's worth of buffers) right before the layer's backward;
 *   2  as 1, and the layer inputs go to pinned host memory as the forward produces them
 *      (two device slots in flight), coming back one layer ahead of the backward; the fp32
 *      LoRA masters and AdamW moments live there too, streamed through the device in chunks
 *      by the optimizer step (the least device memory, for the longest sequences).
 * The recomputed activations are the same bits as the stored ones (the same kernels on the
 * same inputs), so the three levels train identically.
 *
 * The MLP runs over the tokens in chunks of GPU_MLP_CHUNK at every level (its products are
 * row by row, so this changes nothing but their shapes, the same at every level, hence the
 * same bits): at level 0 the chunks are slices of the kept [N, I] activations; at levels 1
 * and 2 its gate, up and act buffers hold one chunk, and the backward reruns each chunk of
 * the MLP right before that chunk's backward. The [N, I] tensors, the largest of a layer,
 * so never exist at those levels.
 *
 * Forward of layer l (x_{l} the residual stream entering it):
 *   x_in  = bf16(x_mid_{l-1} + down_{l-1})    fused into the first RMSNorm (layer 0: the
 *   h1    = rmsnorm(x_in, ln1)                embedding); rstd1 kept
 *   q,k,v = h1 W^T (+ LoRA);  RoPE on q, k;  att, lse = attention(q, k, v)
 *   o     = att Wo^T (+ LoRA)
 *   x_mid = bf16(x_in + o);  h2 = rmsnorm(x_mid, ln2)
 *   gate, up = h2 W^T (+ LoRA);  act = silu(gate) · up;  down = act Wd^T (+ LoRA)
 * and after the last layer x_final = bf16(x_mid + down), hf = rmsnorm(x_final, norm), then
 * the fused LM head + cross-entropy over the trained tokens (kernels/cross_entropy.cuh).
 * A LoRA projection is y = x W^T + s (x A^T) B^T with u = x A^T [N, r] kept for the
 * backward. Backward of a projection, dy given (the order matters: the input x may share
 * its buffer with dx, see mlp_backward):
 *   t  = dy B [N, r];  dB += s dy^T u;  dA += s t^T x       (fp32 gradients)
 *   dx = dy W (+ what dx held, for projections that share an input);  dx += s t A
 * With the LoRA kernels, a group's frozen products come first in the forward and its LoRA
 * after (one lora_forward); in the backward its LoRA weight gradients first (one
 * lora_backward, which reads x), then the frozen dx products, then the LoRA part of dx
 * (one lora_backward_dx).
 *
 * LoRA dropout (PEFT's, on the input of each adapted projection while training; the LoRA
 * kernels only): the masks are train/model.c's, drawn from the run's generator in its order
 * (per micro-batch, layer by layer, the adapted projections in order, each an [N, in] mask
 * of N·in draws), so that train_gpu and train_cpu draw the same ones from the same state.
 * Never stored: kernels/lora.cuh regenerates each element from the generator's state before
 * the projection's mask (gpu_lora_group computes it), in the forward, in its recompute and
 * in the backward alike.
 *
 * Packed conversations: the batch's segment ids are distinct across its rows (the
 * dataloader's rule), so the B rows are one sequence of N tokens to attention, and every
 * product runs over all N tokens at once.
 *
 * Several GPUs (kernels/comm.cuh; gpu_model_set_comm): the last micro-batch of an optimizer
 * step sums each layer's LoRA gradients over the ranks as soon as its backward has queued
 * them, on a stream of its own (comm_stream) ordered by an event, while the main stream goes
 * on with the layers below (gpu_reduce_layer_grads); the main stream waits for the last sum
 * before anything reads the gradients.
 */
#ifndef PERSONA_MODEL_GPU_CUH
#define PERSONA_MODEL_GPU_CUH

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "../kernels/adamw.cuh"
#include "../kernels/attention.cuh"
#include "../kernels/comm.cuh"
#include "../kernels/cross_entropy.cuh"
#include "../kernels/embedding.cuh"
#include "../kernels/lora.cuh"
#include "../kernels/matmul.cuh"
#include "../kernels/nf4.cuh"
#include "../kernels/random.cuh"
#include "../kernels/rmsnorm.cuh"
#include "../kernels/rope.cuh"
#include "../kernels/swiglu.cuh"
extern "C" {
#include "../common/half.h"
#include "../common/util.h"
#include "bnb4bit.h"
#include "gguf.h"
#include "model.h"
#include "model_files.h"
}

typedef __nv_bfloat16 bf16;

// What gpu_model_step does after the forward and loss: nothing, the backward, or the backward
// and then the sum of the LoRA gradients over the ranks (the optimizer step's last micro-batch).
enum { STEP_FORWARD, STEP_BACKWARD, STEP_BACKWARD_REDUCE };

// The LoRA products: the kernels of kernels/lora.cuh (lora_group_forward, lora_group_backward,
// lora_group_backward_dx), or cuBLASLt calls, projection by projection (lora_forward_cublas and
// the LoRA part of linear_backward): train_gpu --lora-impl kernels (the default) or cublas.
enum { LORA_CUBLAS, LORA_KERNELS };

#define GPU_ALIGN 256              // bytes: every tensor of the plan starts on such a boundary
#define GPU_LORA_PAD 64            // elements: each LoRA tensor is padded to a multiple
#ifndef GPU_LOAD_CHUNK              // (a test makes it small, to have several chunks)
#define GPU_LOAD_CHUNK (1 << 22)   // elements of a frozen weight staged on the device at once
#endif
#define GPU_CE_CHUNK 256           // trained tokens per cross-entropy chunk (logits [256, V] fp32)
#ifndef GPU_OPT_CHUNK               // (a test makes it small, to have several chunks)
#define GPU_OPT_CHUNK (1 << 20)    // LoRA elements per optimizer chunk when its state is on the
#endif                             // host; a multiple of GPU_LORA_PAD
#ifndef GPU_MLP_CHUNK               // (a test makes it small, to have several chunks)
#define GPU_MLP_CHUNK 1024         // tokens per MLP chunk; a multiple of 128, so every slice of
#endif                             // a buffer starts 256-byte aligned, as the whole does

// ---------------------------------------------------------------------------------------
// The memory plan

// Four device allocations and, at --recompute 2, one of pinned host memory.
enum { REGION_WEIGHTS, REGION_LORA, REGION_ACTIVATIONS, REGION_SCRATCH, N_DEVICE_REGIONS, REGION_HOST = N_DEVICE_REGIONS,
       N_REGIONS };
static const char *const region_names[N_REGIONS] = {"frozen weights", "LoRA state", "activations", "scratch",
                                                    "host (pinned)"};

typedef struct {
    int region;
    const char *what;  // one line of the table: the tensors of one kind, summed
    size_t bytes;
    int count;
} PlanLine;

typedef struct {
    PlanLine line[48];
    int n;
    size_t region[N_REGIONS];  // bytes of each allocation
    size_t load_scratch;       // the part of the scratch allocation that loading uses
} MemoryPlan;

// The device memory of a plan (the host allocation apart).
static inline size_t plan_total(const MemoryPlan *p) {
    size_t t = 0;
    for (int r = 0; r < N_DEVICE_REGIONS; r++) t += p->region[r];
    return t;
}

static inline size_t round_up(size_t n, size_t a) { return (n + a - 1) / a * a; }

// Hands out consecutive GPU_ALIGN-aligned pieces of one allocation (base NULL: sizes only)
// and adds each to the plan's line for its kind.
typedef struct {
    char *base;
    size_t at;
    int region;
    MemoryPlan *plan;
} Carver;

static inline void *carve(Carver *c, const char *what, size_t bytes) {
    void *p = c->base ? c->base + c->at : NULL;
    bytes = round_up(bytes ? bytes : 1, GPU_ALIGN);
    c->at += bytes;
    if (c->plan) {
        MemoryPlan *pl = c->plan;
        int i = 0;
        while (i < pl->n && !(pl->line[i].region == c->region && strcmp(pl->line[i].what, what) == 0)) i++;
        if (i == pl->n) {
            if (pl->n == (int)(sizeof(pl->line) / sizeof(pl->line[0]))) {
                fprintf(stderr, "error: the memory plan has more kinds of tensor than its table holds\n");
                exit(2);
            }
            pl->line[pl->n++] = (PlanLine){c->region, what, 0, 0};
        }
        pl->line[i].bytes += bytes;
        pl->line[i].count++;
    }
    return p;
}

// ---------------------------------------------------------------------------------------
// The model

typedef struct {
    int batch, seq_len;     // B rows of T positions: N = B·T tokens per micro-batch
    int recompute;          // 0, 1 or 2 (the top comment)
    int lora_r;             // LoRA rank; 0: no LoRA
    unsigned lora_targets;  // bit p: projection p (PROJ_Q, ...) carries LoRA
    float lora_scale;       // s = alpha / r (or alpha / sqrt(r) with rsLoRA)
    int training;           // 0: forward only (no gradients, moments or backward buffers)
    int lora_impl;          // LORA_CUBLAS or LORA_KERNELS
    float lora_dropout;     // PEFT's lora_dropout while training, in [0, 1) (LORA_KERNELS only)
} GpuSettings;

typedef struct {
    int in, out;
    Nf4Device w;              // the frozen weight [out, in]
    bf16 *A16, *B16;          // LoRA [r, in] and [out, r] as the products read them (bf16
                              // copies of the fp32 masters); NULL: no LoRA here
    float *dA, *dB;           // their fp32 gradients (training)
    size_t lora_offset;       // A's index in the LoRA buffers (B follows at a padded offset)
} GpuLinear;

typedef struct {
    bf16 *ln1, *ln2;  // [H]
    GpuLinear proj[N_PROJ];
} GpuLayer;

// What one layer's backward needs from its forward (x_in lives apart, see GpuModel).
typedef struct {
    bf16 *h1, *q, *k, *v, *att, *x_mid, *h2;  // [N, H], [N, Q], [N, KV], [N, KV], [N, Q], [N, H], [N, H]
    bf16 *gate, *up, *act;                    // [N, I] (recompute 0), or [GPU_MLP_CHUNK, I]
    float *rstd1, *rstd2, *lse;               // [N], [N], [N, Hq]
    bf16 *u[N_PROJ];                          // LoRA's x A^T [N, r]
} LayerActs;

typedef struct {
    ModelConfig c;
    GpuSettings s;
    int N;                   // tokens of a full micro-batch, B·T
    int mlp_rows;            // rows of the gate, up and act buffers: N, or one MLP chunk
    void *region[N_REGIONS]; // the four device allocations and the pinned host one
    MemoryPlan plan;
    cudaStream_t stream, copy_stream;  // copy_stream: recompute 2's host transfers
    cudaEvent_t main_done, *transfer_done;  // recompute 2 (host_transfer)
    Matmul mm;
    Comm *comm;                          // the ranks; NULL: this process alone
    cudaStream_t comm_stream;            // several ranks: the gradients' sums
    cudaEvent_t grads_ready, grads_reduced;  // (gpu_reduce_layer_grads)

    // frozen weights
    bf16 *embed, *head, *norm;  // [V, H], [V, H] (= embed when tied), [H]
    GpuLayer *layers;

    // LoRA state: every A and B, each padded to GPU_LORA_PAD elements, in the order layer,
    // projection, A then B; the gradients and moments in the same layout. The fp32 masters
    // and moments live on the device, or at recompute 2 in pinned host memory (opt_on_host),
    // streamed through opt_stage a chunk at a time by the optimizer step.
    size_t lora_n;
    float *lora_params, *lora_grads, *lora_m, *lora_v;
    bf16 *lora_bf16;
    int opt_on_host;
    float *opt_stage;  // [3, GPU_OPT_CHUNK] device: a chunk of the masters, m and v
    float *norm_partial, *norm_squared;  // the gradient norm's scratch (kernels/adamw.cuh)
    const float **norm_tensors;
    size_t *norm_offsets;
    // LoRA dropout (the top comment): the generator's state before the next training
    // micro-batch's masks (the caller sets it from the run's, and reads it back after each
    // step), and the tokens of the micro-batch whose training step is running (0 otherwise:
    // evaluation and sampling draw no masks).
    uint64_t dropout_rng;
    int dropout_tokens;

    // the micro-batch on the device [N] each
    int32_t *inputs, *targets, *positions, *segments;
    float *weights;

    // activations
    LayerActs *acts;        // recompute 0: one per layer; 1, 2: one, reused by every layer
    bf16 **x_in;            // per layer: its input [N, H] (recompute 2: one of two device slots)
    bf16 *x_in_host;        // recompute 2: every layer's input, pinned host [L, N, H]
    bf16 *x_final, *hf;     // [N, H]
    float *rstd_f;          // [N]

    // scratch
    bf16 *o_out, *down_out;                  // forward temporaries [N, H] (training: the same
                                             // bytes as dh and dx, see gpu_model_layout)
    bf16 *wbuf;                              // the dequantized weight of the projection in use
    void *workspace, *ce_scratch;
    double *loss;                            // the micro-batch's loss sum (device)
    float *logits;                           // [V]: the last token's, for sampling
    bf16 *dx, *dh, *d_att, *dq, *dk, *dv;    // backward: [N, H], [N, H], [N, Q], [N, Q], [N, KV], [N, KV]
    float *delta;                            // attention backward's [N, Hq]
    bf16 *lora_t;                            // dy B [N, r] (LORA_CUBLAS)
    LoraScratch lora_scratch;                // G and the split sums of kernels/lora.cuh (LORA_KERNELS)
    // loading (the same bytes as the scratch above)
    void *stage;                             // a chunk of a frozen weight, fp32 or bf16
    float *absmax;                           // first-stage absmax of the projection being quantized
    Nf4MeanPartial *partials;
} GpuModel;

static inline int gpu_has_lora(const GpuModel *m, int p) {
    return m->s.lora_r > 0 && (m->s.lora_targets >> p & 1u);
}

// The dropout draws per token of a micro-batch before projection p of layer l's mask: the
// inputs of every adapted projection before it, layer by layer (l = L, p = 0: all of them).
static inline uint64_t gpu_dropout_draws_before(const GpuModel *m, int l, int p) {
    uint64_t n = 0;
    for (int i = 0; i < l * N_PROJ + p; i++)
        if (gpu_has_lora(m, i % N_PROJ)) n += (uint64_t)m->layers[i / N_PROJ].proj[i % N_PROJ].in;
    return n;
}

// The projections first..last of layer l that carry LoRA (first..last share an input: q..v,
// gate..up, o, down), as one kernels/lora.cuh group in g, their numbers in proj[]; returns
// how many (0: none). Before the layout has placed the LoRA tensors only the shapes are set.
// While a training step runs with dropout, each projection's mask state: its input's rows
// from t0 on (an MLP chunk) start t0·in draws into the projection's mask.
static inline int gpu_lora_group(const GpuModel *m, int l, int first, int last, int t0, LoraGroup *g, int proj[3]) {
    memset(g, 0, sizeof(*g));
    for (int p = first; p <= last; p++) {
        if (!gpu_has_lora(m, p)) continue;
        const GpuLinear *lin = &m->layers[l].proj[p];
        g->in = lin->in;
        g->out[g->P] = lin->out;
        g->A[g->P] = lin->A16, g->B[g->P] = lin->B16, g->dA[g->P] = lin->dA, g->dB[g->P] = lin->dB;
        if (m->dropout_tokens > 0)
            g->dropout_state[g->P] = lora_dropout_advance(
                m->dropout_rng, (uint64_t)m->dropout_tokens * gpu_dropout_draws_before(m, l, p) + (uint64_t)t0 * lin->in);
        proj[g->P++] = p;
    }
    g->r = m->s.lora_r;
    g->scale = m->s.lora_scale;
    g->dropout = m->dropout_tokens > 0 ? m->s.lora_dropout : 0.0f;
    return g->P;
}

// The rows of a frozen weight with `cols` columns quantized per chunk: as many as fit in
// GPU_LOAD_CHUNK elements, a multiple of the rows that make whole NF4 blocks (so each chunk
// but the last ends on a block boundary and the kernel sees its blocks as the whole
// tensor's), all of them when that is fewer.
static inline int64_t load_chunk_rows(int64_t rows, int64_t cols) {
    int64_t a = cols, b = NF4_BLOCKSIZE;
    while (b) {  // a = gcd(cols, 64)
        int64_t t = a % b;
        a = b, b = t;
    }
    int64_t unit = NF4_BLOCKSIZE / a, r = GPU_LOAD_CHUNK / cols / unit * unit;
    if (r < unit) r = unit;
    return r < rows ? r : rows;
}

// Every tensor's place (m->region[] NULL: sizes only) and, with plan, the plan's lines.
static inline void gpu_model_layout(GpuModel *m, MemoryPlan *plan) {
    const ModelConfig *c = &m->c;
    const GpuSettings *s = &m->s;
    size_t L = c->num_hidden_layers, H = c->hidden_size, V = c->vocab_size, I = c->intermediate_size, N = m->N;
    size_t Hq = c->num_attention_heads, Q = Hq * c->head_dim, KV = (size_t)c->num_key_value_heads * c->head_dim;
    size_t r = s->lora_r, bf = sizeof(bf16), f4 = sizeof(float);
    if (plan) memset(plan, 0, sizeof(*plan));
    Carver w = {(char *)m->region[REGION_WEIGHTS], 0, REGION_WEIGHTS, plan};
    Carver lo = {(char *)m->region[REGION_LORA], 0, REGION_LORA, plan};
    Carver a = {(char *)m->region[REGION_ACTIVATIONS], 0, REGION_ACTIVATIONS, plan};
    Carver sc = {(char *)m->region[REGION_SCRATCH], 0, REGION_SCRATCH, plan};

    // frozen weights
    m->embed = (bf16 *)carve(&w, "embeddings bf16", V * H * bf);
    m->head = c->tie_word_embeddings ? m->embed : (bf16 *)carve(&w, "LM head bf16", V * H * bf);
    m->norm = (bf16 *)carve(&w, "RMSNorm weights bf16", H * bf);
    size_t biggest = 0, biggest_blocks = 0, stage = 0;
    for (size_t l = 0; l < L; l++) {
        GpuLayer *ly = &m->layers[l];
        ly->ln1 = (bf16 *)carve(&w, "RMSNorm weights bf16", H * bf);
        ly->ln2 = (bf16 *)carve(&w, "RMSNorm weights bf16", H * bf);
        for (int p = 0; p < N_PROJ; p++) {
            GpuLinear *lin = &ly->proj[p];
            Linear shape;
            model_linear_shape(&shape, c, p);
            lin->out = shape.out, lin->in = shape.in;
            Nf4Device *q = &lin->w;
            q->rows = lin->out, q->cols = lin->in, q->blocksize = NF4_BLOCKSIZE;
            size_t n = (size_t)lin->out * lin->in, nb = CEIL_DIV(n, (size_t)NF4_BLOCKSIZE);
            q->packed = (uint8_t *)carve(&w, "NF4 codes", (n + 1) / 2);
            q->qabsmax = (uint8_t *)carve(&w, "NF4 statistics (double-quantized)", nb);
            q->absmax2 = (float *)carve(&w, "NF4 statistics (double-quantized)", CEIL_DIV(nb, (size_t)NF4_DQ_BLOCK) * f4);
            q->offset = (float *)carve(&w, "NF4 statistics (double-quantized)", f4);
            q->code = (float *)carve(&w, "NF4 statistics (double-quantized)", 256 * f4);
            if (n > biggest) biggest = n;
            if (nb > biggest_blocks) biggest_blocks = nb;
            size_t chunk = (size_t)load_chunk_rows(lin->out, lin->in) * lin->in;
            if (chunk > stage) stage = chunk;
        }
    }

    // LoRA state
    m->lora_n = 0;
    for (size_t l = 0; l < L; l++)
        for (int p = 0; p < N_PROJ; p++) {
            GpuLinear *lin = &m->layers[l].proj[p];
            lin->lora_offset = m->lora_n;
            if (gpu_has_lora(m, p))
                m->lora_n += round_up(r * lin->in, GPU_LORA_PAD) + round_up((size_t)lin->out * r, GPU_LORA_PAD);
        }
    size_t P = m->lora_n;
    int level = s->training ? s->recompute : 1;
    m->opt_on_host = s->training && level == 2;
    Carver host = {(char *)m->region[REGION_HOST], 0, REGION_HOST, plan};
    m->lora_params = m->lora_grads = m->lora_m = m->lora_v = m->opt_stage = NULL;
    m->lora_bf16 = NULL;
    m->norm_partial = m->norm_squared = NULL;
    if (P) {
        m->lora_bf16 = (bf16 *)carve(&lo, "bf16 copies of A, B", P * bf);
        if (s->training) {
            m->lora_grads = (float *)carve(&lo, "fp32 gradients", P * f4);
            Carver *state = m->opt_on_host ? &host : &lo;
            m->lora_params = (float *)carve(state, "fp32 weights A, B", P * f4);
            m->lora_m = (float *)carve(state, "AdamW moments (fp32 m, v)", P * f4);
            m->lora_v = (float *)carve(state, "AdamW moments (fp32 m, v)", P * f4);
            if (m->opt_on_host)
                m->opt_stage = (float *)carve(&lo, "optimizer staging (a chunk of weights, m, v)",
                                              3 * (P < GPU_OPT_CHUNK ? P : GPU_OPT_CHUNK) * f4);
            m->norm_partial = (float *)carve(&lo, "gradient norm scratch", GRAD_NORM_BLOCKS * f4);
            m->norm_squared = (float *)carve(&lo, "gradient norm scratch", f4);
            m->norm_tensors = (const float **)carve(&lo, "gradient norm scratch", sizeof(float *));
            m->norm_offsets = (size_t *)carve(&lo, "gradient norm scratch", 2 * sizeof(size_t));
        }
    }
    for (size_t l = 0; l < L; l++)
        for (int p = 0; p < N_PROJ; p++) {
            GpuLinear *lin = &m->layers[l].proj[p];
            lin->dA = lin->dB = NULL;
            lin->A16 = lin->B16 = NULL;
            if (!gpu_has_lora(m, p) || !m->lora_bf16) continue;
            size_t a0 = lin->lora_offset, b0 = a0 + round_up(r * lin->in, GPU_LORA_PAD);
            lin->A16 = m->lora_bf16 + a0, lin->B16 = m->lora_bf16 + b0;
            if (m->lora_grads) lin->dA = m->lora_grads + a0, lin->dB = m->lora_grads + b0;
        }

    // activations
    m->inputs = (int32_t *)carve(&a, "micro-batch (ids, targets, weights, positions, segments)", N * 4);
    m->targets = (int32_t *)carve(&a, "micro-batch (ids, targets, weights, positions, segments)", N * 4);
    m->weights = (float *)carve(&a, "micro-batch (ids, targets, weights, positions, segments)", N * 4);
    m->positions = (int32_t *)carve(&a, "micro-batch (ids, targets, weights, positions, segments)", N * 4);
    m->segments = (int32_t *)carve(&a, "micro-batch (ids, targets, weights, positions, segments)", N * 4);
    size_t slots = !s->training ? 1 : level == 2 && L > 2 ? 2 : L;
    const char *inputs_what = level == 2 ? "layer inputs in flight (2 slots; all in pinned host memory)"
                              : level == 1 ? "layer inputs (kept)"
                                           : "layer inputs";
    const char *acts_what = level == 0 ? "layer activations (kept for the backward)"
                                       : "one layer's activations (recomputed by the backward)";
    for (size_t l = 0; l < L; l++) m->x_in[l] = NULL;
    for (size_t l = 0; l < slots; l++) m->x_in[l] = (bf16 *)carve(&a, inputs_what, N * H * bf);
    for (size_t l = slots; l < L; l++) m->x_in[l] = m->x_in[l % slots];  // the slots rotate
    size_t n_acts = level == 0 ? L : 1;
    m->mlp_rows = level == 0 ? m->N : m->N < GPU_MLP_CHUNK ? m->N : GPU_MLP_CHUNK;
    const char *mlp_what = level == 0 ? "MLP activations (kept for the backward)"
                                      : "one MLP chunk's activations (gate, up, act; recomputed)";
    for (size_t l = 0; l < n_acts; l++) {
        LayerActs *x = &m->acts[l];
        x->h1 = (bf16 *)carve(&a, acts_what, N * H * bf);
        x->rstd1 = (float *)carve(&a, acts_what, N * f4);
        x->q = (bf16 *)carve(&a, acts_what, N * Q * bf);
        x->k = (bf16 *)carve(&a, acts_what, N * KV * bf);
        x->v = (bf16 *)carve(&a, acts_what, N * KV * bf);
        x->att = (bf16 *)carve(&a, acts_what, N * Q * bf);
        x->lse = (float *)carve(&a, acts_what, N * Hq * f4);
        x->x_mid = (bf16 *)carve(&a, acts_what, N * H * bf);
        x->h2 = (bf16 *)carve(&a, acts_what, N * H * bf);
        x->rstd2 = (float *)carve(&a, acts_what, N * f4);
        x->gate = (bf16 *)carve(&a, mlp_what, m->mlp_rows * I * bf);
        x->up = (bf16 *)carve(&a, mlp_what, m->mlp_rows * I * bf);
        x->act = (bf16 *)carve(&a, mlp_what, m->mlp_rows * I * bf);
        for (int p = 0; p < N_PROJ; p++)
            x->u[p] = gpu_has_lora(m, p) ? (bf16 *)carve(&a, "LoRA x A^T per projection", N * r * bf) : NULL;
    }
    for (size_t l = n_acts; l < L; l++) m->acts[l] = m->acts[0];
    m->x_final = (bf16 *)carve(&a, "final norm (input, output, rstd)", N * H * bf);
    m->hf = (bf16 *)carve(&a, "final norm (input, output, rstd)", N * H * bf);
    m->rstd_f = (float *)carve(&a, "final norm (input, output, rstd)", N * f4);
    m->x_in_host = level == 2 && s->training ? (bf16 *)carve(&host, "layer inputs", L * N * H * bf) : NULL;

    // scratch: what a step uses, and (in the same bytes) what loading uses
    m->wbuf = (bf16 *)carve(&sc, "dequantized weight bf16 (the largest projection)", biggest * bf);
    m->workspace = carve(&sc, "cuBLASLt workspace", MATMUL_WORKSPACE_BYTES);
    m->ce_scratch = carve(&sc, "cross-entropy (logits of 256 tokens, fp32)",
                          cross_entropy_scratch_bytes((int)N, (int)H, (int)V, GPU_CE_CHUNK));
    m->loss = (double *)carve(&sc, "loss, next-token logits (fp32)", sizeof(double));
    m->logits = (float *)carve(&sc, "loss, next-token logits (fp32)", V * f4);
    m->dx = m->dh = m->d_att = m->dq = m->dk = m->dv = m->lora_t = NULL;
    m->delta = NULL;
    if (s->training) {
        // The forward's temporaries share bytes with dh and dx: the attention output o is
        // read back before its layer's backward writes dh (also when recomputed: that
        // comes first), and the MLP's down output only lives during the forward (the
        // recompute skips it), before the backward's first write of dx.
        m->dx = m->down_out = (bf16 *)carve(&sc, "backward gradients (forward temporaries)", N * H * bf);
        m->dh = m->o_out = (bf16 *)carve(&sc, "backward gradients (forward temporaries)", N * H * bf);
        m->d_att = (bf16 *)carve(&sc, "backward gradients", N * Q * bf);
        m->dq = (bf16 *)carve(&sc, "backward gradients", N * Q * bf);
        m->dk = (bf16 *)carve(&sc, "backward gradients", N * KV * bf);
        m->dv = (bf16 *)carve(&sc, "backward gradients", N * KV * bf);
        m->delta = (float *)carve(&sc, "backward gradients", N * Hq * f4);
        if (r && s->lora_impl == LORA_CUBLAS) m->lora_t = (bf16 *)carve(&sc, "backward gradients", N * r * bf);
    } else {
        m->o_out = (bf16 *)carve(&sc, "forward temporaries", N * H * bf);
        m->down_out = (bf16 *)carve(&sc, "forward temporaries", N * H * bf);
    }
    memset(&m->lora_scratch, 0, sizeof(m->lora_scratch));
    if (r && s->lora_impl == LORA_KERNELS) {  // the largest need of the four groups, in the scratch
        LoraScratch *ls = &m->lora_scratch;
        const int groups[4][2] = {{PROJ_Q, PROJ_V}, {PROJ_O, PROJ_O}, {PROJ_GATE, PROJ_UP}, {PROJ_DOWN, PROJ_DOWN}};
        ls->chunk_rows = LORA_CHUNK_ROWS, ls->split_cols = LORA_SPLIT_COLS;
        for (int i = 0; i < 4; i++) {
            LoraGroup g;
            int proj[3], rows = groups[i][0] >= PROJ_GATE ? m->mlp_rows : (int)N;
            if (!gpu_lora_group(m, 0, groups[i][0], groups[i][1], 0, &g, proj)) continue;
            size_t f = lora_scratch_floats(&g, rows, ls->chunk_rows, ls->split_cols), gs = (size_t)rows * g.P * r;
            if (f > ls->partial_capacity) ls->partial_capacity = f;
            if (s->training && gs > ls->g_capacity) ls->g_capacity = gs;
        }
        ls->partials = (float *)carve(&sc, "LoRA kernels' scratch (G, split sums)", ls->partial_capacity * f4);
        if (s->training) ls->g = (bf16 *)carve(&sc, "LoRA kernels' scratch (G, split sums)", ls->g_capacity * bf);
    }
    Carver ld = {(char *)m->region[REGION_SCRATCH], 0, REGION_SCRATCH, NULL};
    m->stage = carve(&ld, "", stage * f4);
    m->absmax = (float *)carve(&ld, "", biggest_blocks * f4);
    m->partials = (Nf4MeanPartial *)carve(&ld, "", NF4_MEAN_PARTIALS * sizeof(Nf4MeanPartial));

    if (plan) {
        plan->region[REGION_WEIGHTS] = w.at, plan->region[REGION_LORA] = lo.at;
        plan->region[REGION_ACTIVATIONS] = a.at, plan->region[REGION_HOST] = host.at;
        plan->load_scratch = ld.at;
        plan->region[REGION_SCRATCH] = sc.at > ld.at ? sc.at : ld.at;
        if (ld.at > sc.at) {  // loading needs more than a step: the difference gets its own line
            Carver extra = {NULL, 0, REGION_SCRATCH, plan};
            carve(&extra, "weight loading staging (beyond the step's scratch)", ld.at - sc.at);
        }
    }
}

// Sets up the host side of a model of this configuration and these settings (no device
// memory yet) and computes its plan.
static inline void gpu_model_init(GpuModel *m, const ModelConfig *c, const GpuSettings *s) {
    memset(m, 0, sizeof(*m));
    m->c = *c;
    m->s = *s;
    m->N = s->batch * s->seq_len;
    lora_require(s->lora_dropout == 0.0f || s->lora_impl == LORA_KERNELS,
                 "model_gpu: LoRA dropout is applied by the LoRA kernels only (not with LORA_CUBLAS)");
    m->layers = (GpuLayer *)xcalloc((size_t)c->num_hidden_layers, sizeof(GpuLayer));
    m->acts = (LayerActs *)xcalloc((size_t)c->num_hidden_layers, sizeof(LayerActs));
    m->x_in = (bf16 **)xcalloc((size_t)c->num_hidden_layers, sizeof(bf16 *));
    gpu_model_layout(m, &m->plan);
}

// The plan alone (no model kept), e.g. for --dry-run and for finding what fits.
static inline MemoryPlan gpu_memory_plan(const ModelConfig *c, const GpuSettings *s) {
    GpuModel m;
    gpu_model_init(&m, c, s);
    MemoryPlan p = m.plan;
    free(m.layers), free(m.acts), free(m.x_in);
    return p;
}

// Allocates the plan (cudaMalloc can still fail: the caller checked the free memory), the
// streams and cuBLASLt, and carves the allocations into tensors.
static inline void gpu_model_allocate(GpuModel *m) {
    for (int r = 0; r < N_DEVICE_REGIONS; r++) cuda_check(cudaMalloc(&m->region[r], m->plan.region[r]));
    if (m->plan.region[REGION_HOST]) cuda_check(cudaMallocHost(&m->region[REGION_HOST], m->plan.region[REGION_HOST]));
    gpu_model_layout(m, NULL);
    cuda_check(cudaStreamCreate(&m->stream));
    cuda_check(cudaStreamCreate(&m->copy_stream));
    matmul_create(&m->mm, m->workspace, MATMUL_WORKSPACE_BYTES);
    if (m->x_in_host) {
        cuda_check(cudaEventCreateWithFlags(&m->main_done, cudaEventDisableTiming));
        m->transfer_done = (cudaEvent_t *)xcalloc((size_t)m->c.num_hidden_layers, sizeof(cudaEvent_t));
        for (int l = 0; l < m->c.num_hidden_layers; l++)
            cuda_check(cudaEventCreateWithFlags(&m->transfer_done[l], cudaEventDisableTiming));
    }
    if (m->s.training && m->lora_n) {  // the gradient norm sees the whole buffer as one tensor
        const float *tensors[1] = {m->lora_grads};
        size_t offsets[2] = {0, m->lora_n};
        cuda_check(cudaMemcpy(m->norm_tensors, tensors, sizeof(tensors), cudaMemcpyHostToDevice));
        cuda_check(cudaMemcpy(m->norm_offsets, offsets, sizeof(offsets), cudaMemcpyHostToDevice));
        cuda_check(cudaMemset(m->lora_bf16, 0, m->lora_n * sizeof(bf16)));  // the padding stays 0
        cuda_check(cudaMemset(m->lora_grads, 0, m->lora_n * sizeof(float)));
        float *state[3] = {m->lora_params, m->lora_m, m->lora_v};
        for (int k = 0; k < 3; k++)
            if (m->opt_on_host) memset(state[k], 0, m->lora_n * sizeof(float));
            else cuda_check(cudaMemset(state[k], 0, m->lora_n * sizeof(float)));
    }
}

// Trains as one of comm's ranks: gpu_model_step's STEP_BACKWARD_REDUCE sums the LoRA
// gradients over them (more than one) on a stream of its own.
static inline void gpu_model_set_comm(GpuModel *m, Comm *comm) {
    m->comm = comm;
    if (comm->nranks == 1) return;
    cuda_check(cudaStreamCreate(&m->comm_stream));
    cuda_check(cudaEventCreateWithFlags(&m->grads_ready, cudaEventDisableTiming));
    cuda_check(cudaEventCreateWithFlags(&m->grads_reduced, cudaEventDisableTiming));
}

static inline void gpu_model_free(GpuModel *m) {
    if (m->comm_stream) {
        cuda_check(cudaStreamDestroy(m->comm_stream));
        cuda_check(cudaEventDestroy(m->grads_ready));
        cuda_check(cudaEventDestroy(m->grads_reduced));
    }
    if (m->stream) {
        matmul_destroy(&m->mm);
        cuda_check(cudaStreamDestroy(m->stream));
        cuda_check(cudaStreamDestroy(m->copy_stream));
        for (int r = 0; r < N_DEVICE_REGIONS; r++) cuda_check(cudaFree(m->region[r]));
        if (m->region[REGION_HOST]) cuda_check(cudaFreeHost(m->region[REGION_HOST]));
    }
    if (m->x_in_host && m->stream) {
        cuda_check(cudaEventDestroy(m->main_done));
        for (int l = 0; l < m->c.num_hidden_layers; l++) cuda_check(cudaEventDestroy(m->transfer_done[l]));
        free(m->transfer_done);
    }
    free(m->layers), free(m->acts), free(m->x_in);
    memset(m, 0, sizeof(*m));
}

// ---------------------------------------------------------------------------------------
// Loading the frozen weights: streamed from the memory-mapped safetensors files, one
// tensor (a projection: one chunk of rows) at a time, so host memory never holds more than
// a chunk; projections are quantized to NF4 on the device.

// Host -> device bf16 for n values of a float array in memory of this dtype (ST_F32,
// ST_BF16 or ST_F16): bf16 as it is, fp32/fp16 rounded to nearest-even through a host chunk.
static inline void upload_as_bf16(bf16 *dst, const void *src, StDtype dtype, size_t n) {
    if (dtype == ST_BF16) {
        cuda_check(cudaMemcpy(dst, src, n * sizeof(bf16), cudaMemcpyHostToDevice));
        return;
    }
    size_t chunk = n < GPU_LOAD_CHUNK ? n : GPU_LOAD_CHUNK;
    uint16_t *buf = (uint16_t *)xmalloc(chunk * sizeof(uint16_t));
    for (size_t i0 = 0; i0 < n; i0 += chunk) {
        size_t k = n - i0 < chunk ? n - i0 : chunk;
        for (size_t i = 0; i < k; i++) {
            float v = dtype == ST_F32 ? ((const float *)src)[i0 + i] : f16_to_f32(((const uint16_t *)src)[i0 + i]);
            buf[i] = f32_to_bf16(v);
        }
        cuda_check(cudaMemcpy(dst + i0, buf, k * sizeof(uint16_t), cudaMemcpyHostToDevice));
    }
    free(buf);
}
static inline void upload_bf16(bf16 *dst, const StTensor *t, size_t n) { upload_as_bf16(dst, t->data, t->dtype, n); }
static inline void upload_f32_as_bf16(bf16 *dst, const float *x, size_t n) { upload_as_bf16(dst, x, ST_F32, n); }

// The first-stage NF4 codes and absmax of rows [r0, r0 + rows) of a projection, from
// values already in the staging buffer (fp32, or bf16 when src_bf16).
static inline void quantize_rows(GpuModel *m, Nf4Device *q, int64_t r0, int64_t rows, int src_bf16) {
    Nf4Device part = *q;
    int64_t first = r0 * q->cols;  // a multiple of the block size (load_chunk_rows)
    part.packed = q->packed + first / 2;
    part.rows = rows;
    float *absmax = m->absmax + first / NF4_BLOCKSIZE;
    if (src_bf16)
        nf4_quantize_blocks(part, absmax, (const bf16 *)m->stage, m->stream);
    else
        nf4_quantize_blocks(part, absmax, (const float *)m->stage, m->stream);
}

// The second and third stages once every chunk is in: the absmax's mean and their codes.
static inline void quantize_statistics(GpuModel *m, Nf4Device *q, const float code[256]) {
    cuda_check(cudaMemcpyAsync(q->code, code, 256 * sizeof(float), cudaMemcpyHostToDevice, m->stream));
    nf4_absmax_mean(*q, m->partials, m->absmax, m->stream);
    nf4_quantize_absmax(*q, m->absmax, m->stream);
    cuda_check(cudaStreamSynchronize(m->stream));  // the staging buffers are reused next
}

// A float tensor [out, in] quantized as train/nf4.c's nf4_weight_quantize(blocksize 64,
// double quantization) would quantize its float32 values: fp32 and bf16 go to the device as
// they are (the kernel reads either exactly), fp16 becomes fp32 on the host first.
static inline void upload_projection(GpuModel *m, GpuLinear *lin, const StTensor *t, const float code[256]) {
    int64_t rows = lin->out, cols = lin->in, step = load_chunk_rows(rows, cols);
    size_t esize = st_dtype_size(t->dtype);
    float *conv = t->dtype == ST_F16 ? (float *)xmalloc((size_t)(step * cols) * sizeof(float)) : NULL;
    for (int64_t r0 = 0; r0 < rows; r0 += step) {
        int64_t k = rows - r0 < step ? rows - r0 : step;
        size_t n = (size_t)(k * cols);
        const char *src = (const char *)t->data + (size_t)(r0 * cols) * esize;
        if (conv) {
            for (size_t i = 0; i < n; i++) conv[i] = f16_to_f32(((const uint16_t *)src)[i]);
            src = (const char *)conv;
        }
        cuda_check(cudaMemcpy(m->stage, src, n * (conv ? sizeof(float) : esize), cudaMemcpyHostToDevice));
        quantize_rows(m, &lin->w, r0, k, t->dtype == ST_BF16);
        cuda_check(cudaStreamSynchronize(m->stream));  // before the next chunk overwrites the stage
    }
    free(conv);
    quantize_statistics(m, &lin->w, code);
}

// A bitsandbytes-4bit projection as stored (train/bnb4bit.c checks it), copied as is.
// An NF4 weight already in host memory (blocksize 64, double quantization) copied as it is.
static inline void upload_nf4(GpuLinear *lin, const Nf4Weight *h) {
    Nf4Device *q = &lin->w;
    size_t n = (size_t)(h->rows * h->cols), nb = CEIL_DIV(n, (size_t)NF4_BLOCKSIZE);
    cuda_check(cudaMemcpy(q->packed, h->packed, (n + 1) / 2, cudaMemcpyHostToDevice));
    cuda_check(cudaMemcpy(q->qabsmax, h->qabsmax, nb, cudaMemcpyHostToDevice));
    cuda_check(cudaMemcpy(q->absmax2, h->absmax2, CEIL_DIV(nb, (size_t)NF4_DQ_BLOCK) * sizeof(float),
                          cudaMemcpyHostToDevice));
    cuda_check(cudaMemcpy(q->offset, &h->offset, sizeof(float), cudaMemcpyHostToDevice));
    cuda_check(cudaMemcpy(q->code, h->code, sizeof(h->code), cudaMemcpyHostToDevice));
}

// A bitsandbytes-4bit projection as stored (train/bnb4bit.c checks it).
static inline int upload_bnb4bit(GpuLinear *lin, const ModelFiles *f, const char *prefix, char *err) {
    Nf4Weight h;
    if (bnb4bit_load_linear(&h, f, prefix, lin->out, lin->in, err)) return -1;
    int rc = 0;
    if (!h.double_quant || h.blocksize != NF4_BLOCKSIZE)
        rc = set_error(err, "%s: '%s' is quantized with blocksize %d%s; train_gpu takes blocksize 64 with double "
                            "quantization (bitsandbytes' defaults)",
                       model_files_path(f, prefix), prefix, h.blocksize, h.double_quant ? "" : " and no double quantization");
    if (rc == 0) upload_nf4(lin, &h);
    nf4_weight_free(&h);
    return rc;
}

// A GGUF model (train/gguf_model.c): read whole by the CPU loader, which dequantizes its
// blocks and quantizes the projections to NF4 (train/nf4.c, the same bytes the device
// would make), then copied up. Unlike a safetensors directory, this holds the model in host
// memory while it loads: fine for the small models GGUF brings (SmolLM2).
static inline int gpu_model_load_gguf(GpuModel *m, const char *path, char *err) {
    Model h;
    if (gguf_model_load(&h, path, 1, err)) return -1;
    size_t H = m->c.hidden_size, V = m->c.vocab_size;
    upload_f32_as_bf16(m->embed, h.embed, V * H);
    if (!m->c.tie_word_embeddings) upload_f32_as_bf16(m->head, h.head, V * H);
    upload_f32_as_bf16(m->norm, h.norm, H);
    for (int l = 0; l < m->c.num_hidden_layers; l++) {
        upload_f32_as_bf16(m->layers[l].ln1, h.layers[l].ln1, H);
        upload_f32_as_bf16(m->layers[l].ln2, h.layers[l].ln2, H);
        for (int p = 0; p < N_PROJ; p++) upload_nf4(&m->layers[l].proj[p], &h.layers[l].proj[p].q);
    }
    model_free(&h);
    return 0;
}

// A float tensor of the expected shape (cols 0: a vector), or NULL with err.
static inline const StTensor *expect_float(const ModelFiles *f, const char *name, int64_t rows, int64_t cols, char *err) {
    int64_t shape[2] = {rows, cols};
    return model_files_expect(f, name, -1, cols ? 2 : 1, shape, err);
}

// Loads the frozen weights of a Hugging Face model directory, or a GGUF file (its config
// already read into m->c), into the allocated model. Returns 0, or -1 with "FILE: reason" in
// err.
static inline int gpu_model_load(GpuModel *m, const char *dir, char *err) {
    if (gguf_is_gguf(dir)) return gpu_model_load_gguf(m, dir, err);
    ModelFiles f;
    if (model_files_open(&f, dir, err)) return -1;
    const ModelConfig *c = &m->c;
    int64_t H = c->hidden_size, V = c->vocab_size;
    float code[256];
    nf4_dynamic_map(code);
    const StTensor *t;
    int rc = 0;
    if (!(t = expect_float(&f, "model.embed_tokens.weight", V, H, err))) rc = -1;
    else upload_bf16(m->embed, t, (size_t)(V * H));
    if (rc == 0 && !c->tie_word_embeddings) {
        if (!(t = expect_float(&f, "lm_head.weight", V, H, err))) rc = -1;
        else upload_bf16(m->head, t, (size_t)(V * H));
    }
    if (rc == 0 && !(t = expect_float(&f, "model.norm.weight", H, 0, err))) rc = -1;
    else if (rc == 0) upload_bf16(m->norm, t, (size_t)H);
    for (int l = 0; l < c->num_hidden_layers && rc == 0; l++) {
        GpuLayer *ly = &m->layers[l];
        char name[160];
        snprintf(name, sizeof(name), "model.layers.%d.input_layernorm.weight", l);
        if (!(t = expect_float(&f, name, H, 0, err))) { rc = -1; break; }
        upload_bf16(ly->ln1, t, (size_t)H);
        snprintf(name, sizeof(name), "model.layers.%d.post_attention_layernorm.weight", l);
        if (!(t = expect_float(&f, name, H, 0, err))) { rc = -1; break; }
        upload_bf16(ly->ln2, t, (size_t)H);
        for (int p = 0; p < N_PROJ && rc == 0; p++) {
            GpuLinear *lin = &ly->proj[p];
            char prefix[128];
            snprintf(prefix, sizeof(prefix), "model.layers.%d.%s", l, proj_names[p]);
            if (c->bnb_4bit) {
                rc = upload_bnb4bit(lin, &f, prefix, err);
                continue;
            }
            snprintf(name, sizeof(name), "%s.weight", prefix);
            if (!(t = expect_float(&f, name, lin->out, lin->in, err))) rc = -1;
            else upload_projection(m, lin, t, code);
        }
    }
    model_files_close(&f);
    return rc;
}

// A model of the configuration's shape with seeded random weights, generated on the
// device: every matrix normal(0, 0.02) (transformers' initializer_range, as init_model
// writes), the projections quantized like loaded ones, the norms ones.
static inline void gpu_model_random(GpuModel *m, uint64_t seed) {
    const ModelConfig *c = &m->c;
    size_t H = c->hidden_size, V = c->vocab_size, L = c->num_hidden_layers;
    float code[256];
    nf4_dynamic_map(code);
    uint64_t stream = 0;  // one random stream per tensor
    random_normal(m->embed, V * H, seed, stream++, 0, 0.02f, m->stream);
    if (!c->tie_word_embeddings) random_normal(m->head, V * H, seed, stream++, 0, 0.02f, m->stream);
    bf16 *ones = (bf16 *)xmalloc(H * sizeof(bf16));
    for (size_t i = 0; i < H; i++) ones[i] = __float2bfloat16(1.0f);
    cuda_check(cudaMemcpy(m->norm, ones, H * sizeof(bf16), cudaMemcpyHostToDevice));
    for (size_t l = 0; l < L; l++) {
        GpuLayer *ly = &m->layers[l];
        cuda_check(cudaMemcpy(ly->ln1, ones, H * sizeof(bf16), cudaMemcpyHostToDevice));
        cuda_check(cudaMemcpy(ly->ln2, ones, H * sizeof(bf16), cudaMemcpyHostToDevice));
        for (int p = 0; p < N_PROJ; p++, stream++) {
            GpuLinear *lin = &ly->proj[p];
            int64_t rows = lin->out, cols = lin->in, step = load_chunk_rows(rows, cols);
            for (int64_t r0 = 0; r0 < rows; r0 += step) {
                int64_t k = rows - r0 < step ? rows - r0 : step;
                random_normal((float *)m->stage, (size_t)(k * cols), seed, stream, (uint64_t)(r0 * cols), 0.02f,
                              m->stream);
                quantize_rows(m, &lin->w, r0, k, 0);
            }
            quantize_statistics(m, &lin->w, code);
        }
    }
    free(ones);
}

// ---------------------------------------------------------------------------------------
// LoRA weights between the host and the device

// Where LoRA matrix A (is_b 0) or B of projection p of layer l starts in the LoRA buffers
// (the weights, gradients, moments and bf16 copies share one layout).
static inline size_t gpu_lora_index(const GpuModel *m, int l, int p, int is_b) {
    const GpuLinear *lin = &m->layers[l].proj[p];
    return lin->lora_offset + (is_b ? round_up((size_t)m->s.lora_r * lin->in, GPU_LORA_PAD) : 0);
}

static inline size_t gpu_lora_size(const GpuModel *m, int l, int p, int is_b) {
    const GpuLinear *lin = &m->layers[l].proj[p];
    return (size_t)m->s.lora_r * (is_b ? lin->out : lin->in);
}

// Copies n floats between the caller's memory and the optimizer state (device or pinned host).
static inline void opt_copy(const GpuModel *m, float *dst, const float *src, size_t n, int to_state) {
    if (m->opt_on_host) memcpy(dst, src, n * sizeof(float));
    else cuda_check(cudaMemcpy(dst, src, n * sizeof(float), to_state ? cudaMemcpyHostToDevice : cudaMemcpyDeviceToHost));
}

// Host -> model: a LoRA matrix's bf16 copy (rounded to nearest-even as the optimizer's
// refresh rounds) and, when training, its fp32 master and AdamW moments (NULL: zeros stay).
static inline void gpu_lora_set(GpuModel *m, int l, int p, int is_b, const float *w, const float *adam_m,
                                const float *adam_v) {
    size_t at = gpu_lora_index(m, l, p, is_b), n = gpu_lora_size(m, l, p, is_b);
    uint16_t *bits = (uint16_t *)xmalloc(n * sizeof(uint16_t));
    for (size_t i = 0; i < n; i++) bits[i] = f32_to_bf16(w[i]);
    cuda_check(cudaMemcpy(m->lora_bf16 + at, bits, n * sizeof(uint16_t), cudaMemcpyHostToDevice));
    free(bits);
    if (!m->s.training) return;
    opt_copy(m, m->lora_params + at, w, n, 1);
    if (adam_m) opt_copy(m, m->lora_m + at, adam_m, n, 1);
    if (adam_v) opt_copy(m, m->lora_v + at, adam_v, n, 1);
}

// Model -> host (training): the fp32 master and, where asked (non-NULL), the moments or the
// gradients.
static inline void gpu_lora_get(const GpuModel *m, int l, int p, int is_b, float *w, float *adam_m, float *adam_v,
                                float *grad) {
    size_t at = gpu_lora_index(m, l, p, is_b), n = gpu_lora_size(m, l, p, is_b);
    cuda_check(cudaStreamSynchronize(m->stream));
    if (w) opt_copy(m, w, m->lora_params + at, n, 0);
    if (adam_m) opt_copy(m, adam_m, m->lora_m + at, n, 0);
    if (adam_v) opt_copy(m, adam_v, m->lora_v + at, n, 0);
    if (grad) cuda_check(cudaMemcpy(grad, m->lora_grads + at, n * sizeof(float), cudaMemcpyDeviceToHost));
}

// One AdamW step (torch's, kernels/adamw.cuh) on every LoRA matrix, the gradients scaled by
// grad_scale (the clipping factor), refreshing the bf16 copies. With the state on the host,
// it streams through the device a chunk at a time, in stream order: the same kernel on the
// same elements (every chunk a multiple of 4 long and 256-byte aligned, as the whole is),
// so the same bits as with the state on the device.
static inline void gpu_lora_update(GpuModel *m, int step, float lr, float weight_decay, float grad_scale) {
    const float beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f;  // train/adamw.c's (torch's defaults)
    cudaStream_t st = m->stream;
    if (!m->opt_on_host) {
        adamw_update(m->lora_params, m->lora_grads, m->lora_m, m->lora_v, m->lora_n, step, lr, beta1, beta2, eps,
                     weight_decay, grad_scale, st, m->lora_bf16);
    } else {
        size_t chunk = m->lora_n < GPU_OPT_CHUNK ? m->lora_n : GPU_OPT_CHUNK;
        float *p = m->opt_stage, *mo = p + chunk, *v = mo + chunk;
        for (size_t o = 0; o < m->lora_n; o += chunk) {
            size_t n = m->lora_n - o < chunk ? m->lora_n - o : chunk, bytes = n * sizeof(float);
            cuda_check(cudaMemcpyAsync(p, m->lora_params + o, bytes, cudaMemcpyHostToDevice, st));
            cuda_check(cudaMemcpyAsync(mo, m->lora_m + o, bytes, cudaMemcpyHostToDevice, st));
            cuda_check(cudaMemcpyAsync(v, m->lora_v + o, bytes, cudaMemcpyHostToDevice, st));
            adamw_update(p, m->lora_grads + o, mo, v, n, step, lr, beta1, beta2, eps, weight_decay, grad_scale, st,
                         m->lora_bf16 + o);
            cuda_check(cudaMemcpyAsync(m->lora_params + o, p, bytes, cudaMemcpyDeviceToHost, st));
            cuda_check(cudaMemcpyAsync(m->lora_m + o, mo, bytes, cudaMemcpyDeviceToHost, st));
            cuda_check(cudaMemcpyAsync(m->lora_v + o, v, bytes, cudaMemcpyDeviceToHost, st));
        }
    }
    cuda_check(cudaStreamSynchronize(st));
}

// ---------------------------------------------------------------------------------------
// Forward and backward

// The micro-batch's N tokens (B rows one after the other; see the top comment) to the device.
static inline void gpu_set_batch(GpuModel *m, const int32_t *inputs, const int32_t *targets, const float *weights,
                          const int32_t *positions, const int32_t *segments, int N) {
    cudaStream_t st = m->stream;
    cuda_check(cudaMemcpyAsync(m->inputs, inputs, (size_t)N * 4, cudaMemcpyHostToDevice, st));
    cuda_check(cudaMemcpyAsync(m->targets, targets, (size_t)N * 4, cudaMemcpyHostToDevice, st));
    cuda_check(cudaMemcpyAsync(m->weights, weights, (size_t)N * 4, cudaMemcpyHostToDevice, st));
    cuda_check(cudaMemcpyAsync(m->positions, positions, (size_t)N * 4, cudaMemcpyHostToDevice, st));
    cuda_check(cudaMemcpyAsync(m->segments, segments, (size_t)N * 4, cudaMemcpyHostToDevice, st));
    cuda_check(cudaStreamSynchronize(st));  // the host buffers may change once this returns
}

// LoRA's part of a projection's forward by cuBLASLt: u = x A^T, and y += s u B^T (not when
// only u is wanted: the recompute of the down projection, whose output the backward does
// not need).
static inline void lora_forward_cublas(GpuModel *m, const GpuLinear *lin, const bf16 *x, bf16 *y, bf16 *u, int N) {
    int r = m->s.lora_r;
    matmul(&m->mm, u, MATMUL_BF16, x, 0, lin->A16, 1, N, r, lin->in, 1.0f, 0.0f, m->stream);
    if (y) matmul(&m->mm, y, MATMUL_BF16, u, 0, lin->B16, 1, N, lin->out, r, m->s.lora_scale, 1.0f, m->stream);
}

// y [N, out] = x W^T (+ LoRA by cuBLASLt, keeping u; the kernels' LoRA is the group's, in
// lora_group_forward); y NULL: only LoRA's u.
static inline void linear_forward(GpuModel *m, const GpuLinear *lin, const bf16 *x, bf16 *y, bf16 *u, int N) {
    if (y) {
        nf4_dequantize(m->wbuf, lin->w, m->stream);
        matmul(&m->mm, y, MATMUL_BF16, x, 0, m->wbuf, 1, N, lin->out, lin->in, 1.0f, 0.0f, m->stream);
    }
    if (lin->A16 && m->s.lora_impl == LORA_CUBLAS) lora_forward_cublas(m, lin, x, y, u, N);
}

// With the LoRA kernels: the LoRA of projections first..last of layer l (sharing the input
// x [n, in], the micro-batch's tokens from t0 on) after their frozen products: u[p] written,
// y[p] += s u_p B_p^T (y[p] NULL: u only). y and u are indexed by projection.
static inline void lora_group_forward(GpuModel *m, int l, int first, int last, int t0, const bf16 *x,
                                      bf16 *const *y, bf16 *const *u, int n) {
    LoraGroup g;
    int proj[3];
    if (m->s.lora_impl != LORA_KERNELS || !gpu_lora_group(m, l, first, last, t0, &g, proj)) return;
    bf16 *gy[3] = {NULL, NULL, NULL}, *gu[3] = {NULL, NULL, NULL};
    for (int i = 0; i < g.P; i++) gy[i] = y[proj[i]], gu[i] = u[proj[i]];
    lora_forward(&g, x, n, gu, gy, &m->lora_scratch, m->stream);
}

// With the LoRA kernels, a group's backward in two halves around its frozen dx products:
// the weight gradients (dA, dB: G kept in the scratch; x still read), then dx += the
// group's LoRA part. dy and u are indexed by projection.
static inline void lora_group_backward(GpuModel *m, int l, int first, int last, int t0, const bf16 *x,
                                       bf16 *const *u, const bf16 *const *dy, int n) {
    LoraGroup g;
    int proj[3];
    if (m->s.lora_impl != LORA_KERNELS || !gpu_lora_group(m, l, first, last, t0, &g, proj)) return;
    const bf16 *gdy[3] = {NULL, NULL, NULL}, *gu[3] = {NULL, NULL, NULL};
    for (int i = 0; i < g.P; i++) gdy[i] = dy[proj[i]], gu[i] = u[proj[i]];
    lora_backward(&g, x, gu, gdy, n, &m->lora_scratch, m->stream);
}

static inline void lora_group_backward_dx(GpuModel *m, int l, int first, int last, int t0, bf16 *dx, int n) {
    LoraGroup g;
    int proj[3];
    if (m->s.lora_impl != LORA_KERNELS || !gpu_lora_group(m, l, first, last, t0, &g, proj)) return;
    lora_backward_dx(&g, n, dx, &m->lora_scratch, m->stream);
}

// dx [N, in] = dy W (+ beta·dx) and, by cuBLASLt, LoRA's part, accumulating dA, dB (the top
// comment's order: x may be dx's own buffer); the kernels' LoRA is the group's
// (lora_group_backward before this, lora_group_backward_dx after).
static inline void linear_backward(GpuModel *m, const GpuLinear *lin, const bf16 *x, const bf16 *u, const bf16 *dy, bf16 *dx,
                            float beta, int N) {
    int r = m->s.lora_r, cublas = lin->A16 && m->s.lora_impl == LORA_CUBLAS;
    float s = m->s.lora_scale;
    cudaStream_t st = m->stream;
    if (cublas) {
        matmul(&m->mm, m->lora_t, MATMUL_BF16, dy, 0, lin->B16, 0, N, r, lin->out, 1.0f, 0.0f, st);
        matmul(&m->mm, lin->dB, MATMUL_F32, dy, 1, u, 0, lin->out, r, N, s, 1.0f, st);
        matmul(&m->mm, lin->dA, MATMUL_F32, m->lora_t, 1, x, 0, r, lin->in, N, s, 1.0f, st);
    }
    nf4_dequantize(m->wbuf, lin->w, st);
    matmul(&m->mm, dx, MATMUL_BF16, dy, 0, m->wbuf, 0, N, lin->in, lin->out, 1.0f, beta, st);
    if (cublas) matmul(&m->mm, dx, MATMUL_BF16, m->lora_t, 0, lin->A16, 0, N, lin->in, r, s, 1.0f, st);
}

// The MLP of tokens [t0, t0 + n), one chunk, into a: gate, up (and their LoRA u), act, and
// the down projection into down_out; recompute: the backward's rerun, which skips the down
// projection's frozen product (only its LoRA u is needed).
static inline void mlp_forward(GpuModel *m, int l, LayerActs *a, int t0, int n, int recompute) {
    const GpuLayer *ly = &m->layers[l];
    size_t I = m->c.intermediate_size, H = m->c.hidden_size, at = m->mlp_rows == m->N ? (size_t)t0 * I : 0;
    size_t r = m->s.lora_r;
    bf16 *gate = a->gate + at, *up = a->up + at, *act = a->act + at, *h2 = a->h2 + (size_t)t0 * H;
    bf16 *u[N_PROJ];
    for (int p = PROJ_GATE; p <= PROJ_DOWN; p++) u[p] = a->u[p] ? a->u[p] + (size_t)t0 * r : NULL;
    bf16 *y[N_PROJ] = {NULL};
    y[PROJ_GATE] = gate, y[PROJ_UP] = up, y[PROJ_DOWN] = recompute ? NULL : m->down_out + (size_t)t0 * H;
    linear_forward(m, &ly->proj[PROJ_GATE], h2, gate, u[PROJ_GATE], n);
    linear_forward(m, &ly->proj[PROJ_UP], h2, up, u[PROJ_UP], n);
    lora_group_forward(m, l, PROJ_GATE, PROJ_UP, t0, h2, y, u, n);
    swiglu_forward(act, gate, up, (size_t)n * I, m->stream);
    linear_forward(m, &ly->proj[PROJ_DOWN], act, y[PROJ_DOWN], u[PROJ_DOWN], n);
    lora_group_forward(m, l, PROJ_DOWN, PROJ_DOWN, t0, act, y, u, n);
}

// The MLP's backward for tokens [t0, t0 + n): dx (the gradient at the layer's output) gives
// dh's rows, the gradient at h2; the MLP's gradients are written over gate, up and act once
// they are no longer read (so x, the down projection's input act, shares dx's buffer).
static inline void mlp_backward(GpuModel *m, int l, LayerActs *a, int t0, int n) {
    const GpuLayer *ly = &m->layers[l];
    size_t I = m->c.intermediate_size, H = m->c.hidden_size, at = m->mlp_rows == m->N ? (size_t)t0 * I : 0;
    size_t r = m->s.lora_r, row = (size_t)t0 * H;
    bf16 *gate = a->gate + at, *up = a->up + at, *act = a->act + at, *h2 = a->h2 + row;
    bf16 *u[N_PROJ];
    for (int p = PROJ_GATE; p <= PROJ_DOWN; p++) u[p] = a->u[p] ? a->u[p] + (size_t)t0 * r : NULL;
    const bf16 *dy[N_PROJ] = {NULL};
    dy[PROJ_GATE] = gate, dy[PROJ_UP] = up, dy[PROJ_DOWN] = m->dx + row;
    lora_group_backward(m, l, PROJ_DOWN, PROJ_DOWN, t0, act, u, dy, n);
    linear_backward(m, &ly->proj[PROJ_DOWN], act, u[PROJ_DOWN], m->dx + row, act, 0.0f, n);  // act := d act
    lora_group_backward_dx(m, l, PROJ_DOWN, PROJ_DOWN, t0, act, n);
    swiglu_backward(gate, up, act, gate, up, (size_t)n * I, m->stream);
    lora_group_backward(m, l, PROJ_GATE, PROJ_UP, t0, h2, u, dy, n);
    linear_backward(m, &ly->proj[PROJ_UP], h2, u[PROJ_UP], up, m->dh + row, 0.0f, n);
    linear_backward(m, &ly->proj[PROJ_GATE], h2, u[PROJ_GATE], gate, m->dh + row, 1.0f, n);
    lora_group_backward_dx(m, l, PROJ_GATE, PROJ_UP, t0, m->dh + row, n);
}

// Layer l's forward (the top comment) into a. Its input is bf16(res + add), which the first
// RMSNorm writes to m->x_in[l]; add NULL: the input is res itself (m->x_in[l] already, or
// the embedding). recompute: the backward's rerun of the attention half (layer_backward
// reruns the MLP chunk by chunk).
static inline void layer_forward(GpuModel *m, int l, LayerActs *a, const bf16 *res, const bf16 *add, int N,
                                 int recompute) {
    const ModelConfig *c = &m->c;
    const GpuLayer *ly = &m->layers[l];
    int H = c->hidden_size, Hq = c->num_attention_heads, Hkv = c->num_key_value_heads, D = c->head_dim;
    cudaStream_t st = m->stream;
    bf16 *x_in = m->x_in[l];
    rmsnorm_forward(add ? x_in : NULL, a->h1, a->rstd1, res, add, ly->ln1, N, H, c->rms_norm_eps, st);
    bf16 *y[N_PROJ] = {NULL};
    y[PROJ_Q] = a->q, y[PROJ_K] = a->k, y[PROJ_V] = a->v, y[PROJ_O] = m->o_out;
    linear_forward(m, &ly->proj[PROJ_Q], a->h1, a->q, a->u[PROJ_Q], N);
    linear_forward(m, &ly->proj[PROJ_K], a->h1, a->k, a->u[PROJ_K], N);
    linear_forward(m, &ly->proj[PROJ_V], a->h1, a->v, a->u[PROJ_V], N);
    lora_group_forward(m, l, PROJ_Q, PROJ_V, 0, a->h1, y, a->u, N);
    rope_forward(a->q, a->k, m->positions, N, Hq, Hkv, D, c->rope_theta, st);
    attention_forward(a->att, a->lse, a->q, a->k, a->v, m->segments, N, Hq, Hkv, D, c->sliding_window, NULL, st);
    linear_forward(m, &ly->proj[PROJ_O], a->att, m->o_out, a->u[PROJ_O], N);
    lora_group_forward(m, l, PROJ_O, PROJ_O, 0, a->att, y, a->u, N);
    rmsnorm_forward(a->x_mid, a->h2, a->rstd2, x_in, m->o_out, ly->ln2, N, H, c->rms_norm_eps, st);
    if (recompute) return;
    for (int t0 = 0; t0 < N; t0 += GPU_MLP_CHUNK) mlp_forward(m, l, a, t0, min(GPU_MLP_CHUNK, N - t0), 0);
}

// Layer l's backward: m->dx holds the gradient at the layer's output and becomes the one at
// its input; LoRA gradients accumulate. a holds the layer's forward (at recompute levels, its
// attention half: the MLP is rerun here a chunk at a time), destroyed here.
static inline void layer_backward(GpuModel *m, int l, LayerActs *a, int N) {
    const ModelConfig *c = &m->c;
    const GpuLayer *ly = &m->layers[l];
    int H = c->hidden_size, Hq = c->num_attention_heads, Hkv = c->num_key_value_heads, D = c->head_dim;
    cudaStream_t st = m->stream;
    // MLP: x_out = x_mid + down(silu(gate(h2)) · up(h2))
    for (int t0 = 0; t0 < N; t0 += GPU_MLP_CHUNK) {
        int n = min(GPU_MLP_CHUNK, N - t0);
        if (m->s.recompute > 0) mlp_forward(m, l, a, t0, n, 1);
        mlp_backward(m, l, a, t0, n);
    }
    rmsnorm_backward(m->dx, m->dh, m->dx, a->x_mid, ly->ln2, a->rstd2, N, H, st);
    // attention: x_mid = x_in + o(attention(rope(q(h1)), rope(k(h1)), v(h1)))
    const bf16 *dy[N_PROJ] = {NULL};
    dy[PROJ_Q] = m->dq, dy[PROJ_K] = m->dk, dy[PROJ_V] = m->dv, dy[PROJ_O] = m->dx;
    lora_group_backward(m, l, PROJ_O, PROJ_O, 0, a->att, a->u, dy, N);
    linear_backward(m, &ly->proj[PROJ_O], a->att, a->u[PROJ_O], m->dx, m->d_att, 0.0f, N);
    lora_group_backward_dx(m, l, PROJ_O, PROJ_O, 0, m->d_att, N);
    attention_backward(m->dq, m->dk, m->dv, m->delta, a->q, a->k, a->v, a->att, m->d_att, a->lse, m->segments, N, Hq,
                       Hkv, D, c->sliding_window, NULL, st);
    rope_backward(m->dq, m->dk, m->positions, N, Hq, Hkv, D, c->rope_theta, st);
    lora_group_backward(m, l, PROJ_Q, PROJ_V, 0, a->h1, a->u, dy, N);
    linear_backward(m, &ly->proj[PROJ_Q], a->h1, a->u[PROJ_Q], m->dq, m->dh, 0.0f, N);
    linear_backward(m, &ly->proj[PROJ_K], a->h1, a->u[PROJ_K], m->dk, m->dh, 1.0f, N);
    linear_backward(m, &ly->proj[PROJ_V], a->h1, a->u[PROJ_V], m->dv, m->dh, 1.0f, N);
    lora_group_backward_dx(m, l, PROJ_Q, PROJ_V, 0, m->dh, N);
    rmsnorm_backward(m->dx, m->dh, m->dx, m->x_in[l], ly->ln1, a->rstd1, N, H, st);
}

// Recompute 2. Layer l's input lives in device slot l % 2. The forward sends it to pinned
// host memory right after writing it (on the copy stream, once the main stream has written
// it: m->main_done), and layer l + 2 waits for that transfer before writing the slot. The
// last two layers' inputs are still in their slots when the backward starts; every other
// one comes back a layer ahead of the backward (the transfer waits until the layer that
// used the slot before, l + 2, has been computed). transfer_done[l] marks each transfer.
static inline void host_transfer(GpuModel *m, int l, int N, int to_host) {
    size_t bytes = (size_t)N * m->c.hidden_size * sizeof(bf16);
    bf16 *host = m->x_in_host + (size_t)l * m->N * m->c.hidden_size;
    cuda_check(cudaEventRecord(m->main_done, m->stream));
    cuda_check(cudaStreamWaitEvent(m->copy_stream, m->main_done, 0));
    if (to_host)
        cuda_check(cudaMemcpyAsync(host, m->x_in[l], bytes, cudaMemcpyDeviceToHost, m->copy_stream));
    else
        cuda_check(cudaMemcpyAsync(m->x_in[l], host, bytes, cudaMemcpyHostToDevice, m->copy_stream));
    cuda_check(cudaEventRecord(m->transfer_done[l], m->copy_stream));
}

// The decoder's forward over the micro-batch on the device (gpu_set_batch) of N tokens, to
// hf = the final norm's output. For a backward (keep), recompute 2 sends the layer inputs
// to the host as it goes.
static inline void gpu_model_forward(GpuModel *m, int N, int keep) {
    const ModelConfig *c = &m->c;
    int L = c->num_hidden_layers, H = c->hidden_size;
    int offload = m->s.training && m->s.recompute == 2 && keep;
    cudaStream_t st = m->stream;
    embedding_forward(m->x_in[0], m->embed, m->inputs, N, c->vocab_size, H, st);
    for (int l = 0; l < L; l++) {
        LayerActs *a = &m->acts[l];
        const LayerActs *prev = l ? &m->acts[l - 1] : NULL;
        if (offload && l >= 2) cuda_check(cudaStreamWaitEvent(st, m->transfer_done[l - 2], 0));
        layer_forward(m, l, a, l ? prev->x_mid : m->x_in[0], l ? m->down_out : NULL, N, 0);
        if (offload && l < L - 2) host_transfer(m, l, N, 1);
    }
    rmsnorm_forward(m->x_final, m->hf, m->rstd_f, m->acts[L - 1].x_mid, m->down_out, m->norm, N, H, c->rms_norm_eps, st);
}

// Layer l's LoRA gradients are complete: its backward (of the step's last micro-batch) is
// queued on the main stream. The comm stream waits for that point (an event) and sums them
// over the ranks there, while the main stream goes on with the backward of layer l - 1,
// which touches none of them. They are one range of the gradient buffer (its order is
// layer, projection).
static inline void gpu_reduce_layer_grads(GpuModel *m, int l) {
    size_t first = m->layers[l].proj[0].lora_offset;
    size_t end = l + 1 < m->c.num_hidden_layers ? m->layers[l + 1].proj[0].lora_offset : m->lora_n;
    cuda_check(cudaEventRecord(m->grads_ready, m->stream));
    cuda_check(cudaStreamWaitEvent(m->comm_stream, m->grads_ready, 0));
    comm_all_reduce_sum(m->comm, m->lora_grads + first, end - first, m->comm_stream);
}

// The forward, then the loss: returns the sum over tokens of weight · cross-entropy. With a
// backward (STEP_BACKWARD, STEP_BACKWARD_REDUCE), LoRA gradients accumulate grad_scale ·
// d(that sum)/d(A, B) (the caller zeroes them per optimizer step), and with dropout the
// masks are drawn: dropout_rng moves past them. With STEP_BACKWARD_REDUCE, and several
// ranks, they are then summed over the ranks, layer by layer as the backward finishes each
// (grad_scale is the same on every rank: one over the trained tokens of all of them, so the
// sum is the gradient of the whole step's loss).
static inline double gpu_model_step(GpuModel *m, int N, float grad_scale, int backward) {
    const ModelConfig *c = &m->c;
    int L = c->num_hidden_layers, H = c->hidden_size, V = c->vocab_size;
    int level = m->s.recompute, offload = level == 2 && backward;
    int reduce = backward == STEP_BACKWARD_REDUCE && m->comm && m->comm->nranks > 1;
    cudaStream_t st = m->stream;
    m->dropout_tokens = backward && m->s.lora_dropout > 0.0f ? N : 0;
    gpu_model_forward(m, N, backward);
    cross_entropy_forward_backward(&m->mm, m->loss, backward ? m->dh : NULL, m->hf, m->head, m->targets, m->weights,
                                   N, H, V, GPU_CE_CHUNK, grad_scale, m->ce_scratch, st);
    double loss;
    cuda_check(cudaMemcpyAsync(&loss, m->loss, sizeof(double), cudaMemcpyDeviceToHost, st));
    if (backward) {
        rmsnorm_backward(m->dx, m->dh, NULL, m->x_final, m->norm, m->rstd_f, N, H, st);
        for (int l = L - 1; l >= 0; l--) {
            LayerActs *a = &m->acts[l];
            if (offload && l < L - 2) cuda_check(cudaStreamWaitEvent(st, m->transfer_done[l], 0));
            if (offload && l >= 1 && l - 1 < L - 2) host_transfer(m, l - 1, N, 0);  // one layer ahead
            if (level > 0) layer_forward(m, l, a, m->x_in[l], NULL, N, 1);
            layer_backward(m, l, a, N);
            if (reduce) gpu_reduce_layer_grads(m, l);  // before layer l - 1's backward is queued
        }
    }
    if (m->dropout_tokens)
        m->dropout_rng = lora_dropout_advance(m->dropout_rng, (uint64_t)N * gpu_dropout_draws_before(m, L, 0));
    m->dropout_tokens = 0;
    if (reduce) {  // the optimizer reads the sums on the main stream
        cuda_check(cudaEventRecord(m->grads_reduced, m->comm_stream));
        cuda_check(cudaStreamWaitEvent(st, m->grads_reduced, 0));
    }
    if (m->comm) comm_wait(m->comm, st);  // a lost rank ends the wait (comm.cuh)
    else cuda_check(cudaStreamSynchronize(st));
    return loss;
}

// The logits of the micro-batch's last token (fp32 [V], into host memory): what sampling
// the next token needs.
static inline void gpu_model_last_logits(GpuModel *m, int N, float *logits) {
    int H = m->c.hidden_size, V = m->c.vocab_size;
    gpu_model_forward(m, N, 0);
    matmul(&m->mm, m->logits, MATMUL_F32, m->hf + (size_t)(N - 1) * H, 0, m->head, 1, 1, V, H, 1.0f, 0.0f, m->stream);
    cuda_check(cudaMemcpyAsync(logits, m->logits, (size_t)V * sizeof(float), cudaMemcpyDeviceToHost, m->stream));
    cuda_check(cudaStreamSynchronize(m->stream));
}

#endif
