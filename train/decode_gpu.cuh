/*
 * decode_gpu.cuh: decoding with a KV cache on one GPU, over train/model_gpu.cuh's model: its
 * NF4 frozen weights, bf16 embeddings, norms, head and LoRA copies, its kernels and its
 * activation buffers (sized for DECODE_CHUNK tokens). The steps of train/decode.c (whose
 * header states the cache and the step) with decode.c's contract, so chat_cli.c drives
 * either (a Decoder); in bf16 with fp32 accumulation, as the training forward.
 *
 * A step's rows: the sequences with one new token each go through the layers together (the
 * rows of a batch); a sequence with a prompt chunk goes through by itself. Per layer:
 *   h1 = rmsnorm(x); q, k, v = h1 W^T (+ LoRA)     one row: nf4_matmul (kernels/
 *                                                   nf4_matmul.cuh), which reads the codes once
 *                                                   (0.52 bytes a weight); more: model_gpu's dequantize +
 *                                                   cuBLASLt product; LoRA by its products
 *   RoPE on q, k at each token's position
 *   attention                                       kernels/attention_decode.cuh against
 *                                                   each sequence's device cache, chunks in
 *                                                   pieces of at most 16 / (Hq / Hkv) tokens;
 *                                                   a chunk read into an empty cache: the
 *                                                   training attention (attention.cuh)
 *   the new keys and values appended to the cache
 *   o, residual, rmsnorm, SwiGLU MLP, residual      as model_gpu's layer_forward
 * then the final norm and, for the rows whose logits are wanted, the LM head in fp32,
 * copied to the host. The device holds `sequences` caches of `slots` positions each (the
 * window W, or the context), [sequences, slots, Hkv, D] per layer for K and for V; a host
 * KvCache (which keeps the tokens, and with them decode.c's reuse and rewind rules) is bound
 * to a device cache the first time a step sees it, for as long as the decoder lives.
 *
 * Not the CPU's bits: what chat_gpu's logits are worth is bounded in
 * test/test_cuda_decode_gpu.cpp (against decode.c over 64 steps past the window).
 */
#ifndef PERSONA_DECODE_GPU_CUH
#define PERSONA_DECODE_GPU_CUH

#include "../kernels/attention_decode.cuh"
#include "../kernels/nf4_matmul.cuh"
#include "model_gpu.cuh"
extern "C" {
#include "decode.h"
}

typedef struct {
    GpuModel m;
    int sequences, slots, nq_max;  // device caches, positions each, chunk piece for attention_decode
    bf16 *kv;                      // every layer's K and V caches, one allocation
    const KvCache **owner;         // [sequences]: the host cache each device cache serves (NULL: free)
    int32_t *d_pos0, *d_index;     // [DECODE_CHUNK] each: positions and cache indices of a step
    float *work;                   // attention_decode's workspace
    float *d_logits;               // [DECODE_CHUNK, V] fp32
    int32_t *h_ids, *h_pos, *h_pos0, *h_index;  // host staging [DECODE_CHUNK]
} GpuDecoder;

static inline bf16 *gpu_decoder_cache(const GpuDecoder *g, int layer, int is_v) {
    size_t per = (size_t)g->sequences * g->slots * g->m.c.num_key_value_heads * g->m.c.head_dim;
    return g->kv + ((size_t)layer * 2 + is_v) * per;
}

// The decoder for a model of this configuration, with LoRA as lora says (r 0: none), for up
// to `sequences` caches of `context` positions (the window's W when the model has one). The
// model's weights come next (gpu_model_load or gpu_model_random on g->m, gpu_lora_set).
static inline void gpu_decoder_init(GpuDecoder *g, const ModelConfig *c, int lora_r, unsigned lora_targets,
                                    float lora_scale, int sequences, int64_t context) {
    memset(g, 0, sizeof(*g));
    GpuSettings s = {1, DECODE_CHUNK > sequences ? DECODE_CHUNK : sequences, 1, lora_r, lora_targets, lora_scale,
                     0, LORA_CUBLAS, 0.0f};
    gpu_model_init(&g->m, c, &s);
    gpu_model_allocate(&g->m);
    int G = c->num_attention_heads / c->num_key_value_heads, V = c->vocab_size, rows = g->m.N;
    g->sequences = sequences;
    g->slots = c->sliding_window > 0 ? c->sliding_window : (int)context;
    g->nq_max = ATTD_MAX_ROWS / G > 0 ? ATTD_MAX_ROWS / G : 1;
    size_t kv = (size_t)c->num_hidden_layers * 2 * sequences * g->slots * c->num_key_value_heads * c->head_dim;
    int max_keys = g->slots + g->nq_max;
    size_t work = attention_decode_workspace(sequences, 1, c->num_attention_heads, c->head_dim, max_keys);
    size_t work_chunk = attention_decode_workspace(1, g->nq_max, c->num_attention_heads, c->head_dim, max_keys);
    cuda_check(cudaMalloc(&g->kv, kv * sizeof(bf16)));
    cuda_check(cudaMalloc(&g->d_pos0, (size_t)rows * sizeof(int32_t)));
    cuda_check(cudaMalloc(&g->d_index, (size_t)rows * sizeof(int32_t)));
    cuda_check(cudaMalloc(&g->work, (work > work_chunk ? work : work_chunk) * sizeof(float)));
    cuda_check(cudaMalloc(&g->d_logits, (size_t)rows * V * sizeof(float)));
    g->owner = (const KvCache **)xcalloc((size_t)sequences, sizeof(KvCache *));
    g->h_ids = (int32_t *)xmalloc((size_t)rows * sizeof(int32_t));
    g->h_pos = (int32_t *)xmalloc((size_t)rows * sizeof(int32_t));
    g->h_pos0 = (int32_t *)xmalloc((size_t)rows * sizeof(int32_t));
    g->h_index = (int32_t *)xmalloc((size_t)rows * sizeof(int32_t));
}

static inline void gpu_decoder_free(GpuDecoder *g) {
    cuda_check(cudaFree(g->kv));
    cuda_check(cudaFree(g->d_pos0));
    cuda_check(cudaFree(g->d_index));
    cuda_check(cudaFree(g->work));
    cuda_check(cudaFree(g->d_logits));
    free(g->owner), free(g->h_ids), free(g->h_pos), free(g->h_pos0), free(g->h_index);
    gpu_model_free(&g->m);
    memset(g, 0, sizeof(*g));
}

// The device cache serving host cache c (bound now if it is new).
static inline int gpu_decoder_bind(GpuDecoder *g, const KvCache *c) {
    int free_at = -1;
    for (int i = 0; i < g->sequences; i++) {
        if (g->owner[i] == c) return i;
        if (!g->owner[i] && free_at < 0) free_at = i;
    }
    if (free_at < 0) {
        fprintf(stderr, "error: decode_gpu: more sequences than the %d device caches\n", g->sequences);
        exit(2);
    }
    g->owner[free_at] = c;
    return free_at;
}

// Frees the device cache of host cache c (before c is freed or reused for something else).
static inline void gpu_decoder_forget(GpuDecoder *g, const KvCache *c) {
    for (int i = 0; i < g->sequences; i++)
        if (g->owner[i] == c) g->owner[i] = NULL;
}

// y [N, out] = x W^T (+ LoRA by cuBLASLt, the decoder's setting): nf4_matmul straight from
// the codes for one row (no K split: the decoder keeps no split scratch), the dequantized
// product for more.
static inline void gpu_decoder_project(GpuDecoder *g, const GpuLinear *lin, const bf16 *x, bf16 *y, bf16 *u, int N) {
    GpuModel *m = &g->m;
    if (N > 1) return linear_forward(m, lin, x, y, u, N);
    nf4_matmul(y, x, lin->w, 1, NULL, m->stream);
    if (lin->A16) lora_forward_cublas(m, lin, x, y, u, 1);
}

static inline void gpu_decoder_upload(int32_t *dev, const int32_t *host, int n, cudaStream_t st) {
    cuda_check(cudaMemcpyAsync(dev, host, (size_t)n * sizeof(int32_t), cudaMemcpyHostToDevice, st));
}

// Attention of the step's N rows and the cache appends, for one layer. chunk: the rows are
// one sequence's tokens from position p0 on (cache h_index[0]); otherwise N sequences with
// one token each (positions and caches in d_pos0, d_index, already on the device).
static inline void gpu_decoder_attention(GpuDecoder *g, int l, int N, int chunk, int p0, int max_keys) {
    GpuModel *m = &g->m;
    const ModelConfig *c = &m->c;
    LayerActs *a = &m->acts[0];
    int Hq = c->num_attention_heads, Hkv = c->num_key_value_heads, D = c->head_dim, W = c->sliding_window;
    size_t Q = (size_t)Hq * D, KV = (size_t)Hkv * D;
    bf16 *kc = gpu_decoder_cache(g, l, 0), *vc = gpu_decoder_cache(g, l, 1);
    cudaStream_t st = m->stream;
    if (!chunk) {
        attention_decode(a->att, a->q, a->k, a->v, kc, vc, g->d_index, g->d_pos0, N, 1, Hq, Hkv, D, g->slots, W,
                         max_keys, g->work, st);
        attention_decode_append(kc, vc, a->k, a->v, g->d_index, g->d_pos0, N, 1, (int)KV, g->slots, st);
        return;
    }
    // d_pos0[k] holds the start of piece k (set by the caller), d_index[0] the cache
    if (p0 == 0) {  // an empty cache: the chunk attends only to itself; its last `slots` tokens stay
        attention_forward(a->att, a->lse, a->q, a->k, a->v, NULL, N, Hq, Hkv, D, W, NULL, st);
        int keep = N < g->slots ? N : g->slots, piece = CEIL_DIV(N, g->nq_max);  // d_pos0[piece] = N - keep
        attention_decode_append(kc, vc, a->k + (N - keep) * KV, a->v + (N - keep) * KV, g->d_index,
                                g->d_pos0 + piece, 1, keep, (int)KV, g->slots, st);
        return;
    }
    for (int s0 = 0, k = 0; s0 < N; s0 += g->nq_max, k++) {  // pieces in order, each appended before the next
        int n = N - s0 < g->nq_max ? N - s0 : g->nq_max;
        attention_decode(a->att + s0 * Q, a->q + s0 * Q, a->k + s0 * KV, a->v + s0 * KV, kc, vc, g->d_index,
                         g->d_pos0 + k, 1, n, Hq, Hkv, D, g->slots, W, max_keys, g->work, st);
        attention_decode_append(kc, vc, a->k + s0 * KV, a->v + s0 * KV, g->d_index, g->d_pos0 + k, 1, n, (int)KV,
                                g->slots, st);
    }
}

// The step's rows [0, N) through the model (ids and positions in h_ids, h_pos; see
// gpu_decoder_attention for chunk and p0), then the logits of rows [r0, r0 + R) into out.
static inline void gpu_decoder_rows(GpuDecoder *g, int N, int chunk, int p0, int max_keys, int r0, int R,
                                    float *out) {
    GpuModel *m = &g->m;
    const ModelConfig *c = &m->c;
    int H = c->hidden_size, V = c->vocab_size, I = c->intermediate_size;
    float eps = c->rms_norm_eps;
    cudaStream_t st = m->stream;
    LayerActs *a = &m->acts[0];
    gpu_decoder_upload(m->inputs, g->h_ids, N, st);
    gpu_decoder_upload(m->positions, g->h_pos, N, st);
    embedding_forward(m->x_in[0], m->embed, m->inputs, N, V, H, st);
    for (int l = 0; l < c->num_hidden_layers; l++) {
        const GpuLayer *ly = &m->layers[l];
        // the layer's input: the embedding, or the last layer's x_mid + down
        rmsnorm_forward(l ? m->x_in[0] : NULL, a->h1, a->rstd1, l ? a->x_mid : m->x_in[0], l ? m->down_out : NULL,
                        ly->ln1, N, H, eps, st);
        gpu_decoder_project(g, &ly->proj[PROJ_Q], a->h1, a->q, a->u[PROJ_Q], N);
        gpu_decoder_project(g, &ly->proj[PROJ_K], a->h1, a->k, a->u[PROJ_K], N);
        gpu_decoder_project(g, &ly->proj[PROJ_V], a->h1, a->v, a->u[PROJ_V], N);
        rope_forward(a->q, a->k, m->positions, N, c->num_attention_heads, c->num_key_value_heads, c->head_dim,
                     c->rope_theta, st);
        gpu_decoder_attention(g, l, N, chunk, p0, max_keys);
        gpu_decoder_project(g, &ly->proj[PROJ_O], a->att, m->o_out, a->u[PROJ_O], N);
        rmsnorm_forward(a->x_mid, a->h2, a->rstd2, m->x_in[0], m->o_out, ly->ln2, N, H, eps, st);
        gpu_decoder_project(g, &ly->proj[PROJ_GATE], a->h2, a->gate, a->u[PROJ_GATE], N);
        gpu_decoder_project(g, &ly->proj[PROJ_UP], a->h2, a->up, a->u[PROJ_UP], N);
        swiglu_forward(a->act, a->gate, a->up, (size_t)N * I, st);
        gpu_decoder_project(g, &ly->proj[PROJ_DOWN], a->act, m->down_out, a->u[PROJ_DOWN], N);
    }
    rmsnorm_forward(m->x_final, m->hf, m->rstd_f, a->x_mid, m->down_out, m->norm, N, H, eps, st);
    matmul(&m->mm, g->d_logits, MATMUL_F32, m->hf + (size_t)r0 * H, 0, m->head, 1, R, V, H, 1.0f, 0.0f, st);
    cuda_check(cudaMemcpyAsync(out, g->d_logits, (size_t)R * V * sizeof(float), cudaMemcpyDeviceToHost, st));
    cuda_check(cudaStreamSynchronize(st));
}

// The keys a query at position p sees (its window, or all before it).
static inline int gpu_decoder_keys(const GpuDecoder *g, int64_t p) {
    int W = g->m.c.sliding_window;
    return (int)(W > 0 && p + 1 > W ? W : p + 1);
}

// decode.h's step (the Decoder's): prompt chunks one sequence at a time, then the single
// tokens together.
static inline int gpu_decoder_step(void *ctx, DecodeSeq *seqs, int nseq, float *logits, int all_logits) {
    GpuDecoder *g = (GpuDecoder *)ctx;
    int V = g->m.c.vocab_size, rows = 0, *out_row = (int *)xmalloc((size_t)nseq * sizeof(int));
    for (int s = 0; s < nseq; s++) {
        if (seqs[s].n > kv_cache_room(seqs[s].cache) || seqs[s].n > g->m.N) {
            free(out_row);
            return -1;
        }
        out_row[s] = rows;  // where its logits go
        rows += all_logits ? seqs[s].n : 1;
    }
    for (int s = 0; s < nseq; s++) {  // prompt chunks
        if (seqs[s].n == 1) continue;
        KvCache *c = seqs[s].cache;
        int n = seqs[s].n, p0 = (int)c->tokens.len, pieces = CEIL_DIV(n, g->nq_max);
        g->h_index[0] = gpu_decoder_bind(g, c);
        for (int i = 0; i < n; i++) g->h_ids[i] = seqs[s].tokens[i], g->h_pos[i] = p0 + i;
        for (int k = 0; k < pieces; k++) g->h_pos0[k] = p0 + k * g->nq_max;
        g->h_pos0[pieces] = n - (n < g->slots ? n : g->slots);  // the empty-cache append's first row
        gpu_decoder_upload(g->d_pos0, g->h_pos0, pieces + 1, g->m.stream);
        gpu_decoder_upload(g->d_index, g->h_index, 1, g->m.stream);
        int r0 = all_logits ? 0 : n - 1;
        gpu_decoder_rows(g, n, 1, p0, gpu_decoder_keys(g, p0 + n - 1) + g->nq_max, r0, n - r0,
                         logits + (size_t)out_row[s] * V);
    }
    int N = 0, max_keys = 1;  // single tokens, together
    for (int s = 0; s < nseq; s++) {
        if (seqs[s].n != 1) continue;
        int64_t p = (int64_t)seqs[s].cache->tokens.len;
        g->h_ids[N] = seqs[s].tokens[0], g->h_pos[N] = g->h_pos0[N] = (int32_t)p;
        g->h_index[N] = gpu_decoder_bind(g, seqs[s].cache);
        int keys = gpu_decoder_keys(g, p);
        max_keys = keys > max_keys ? keys : max_keys;
        N++;
    }
    if (N) {
        float *host = (float *)xmalloc((size_t)N * V * sizeof(float));
        gpu_decoder_upload(g->d_pos0, g->h_pos0, N, g->m.stream);
        gpu_decoder_upload(g->d_index, g->h_index, N, g->m.stream);
        gpu_decoder_rows(g, N, 0, 0, max_keys, 0, N, host);
        for (int s = 0, r = 0; s < nseq; s++)
            if (seqs[s].n == 1) memcpy(logits + (size_t)out_row[s] * V, host + (size_t)r++ * V, (size_t)V * sizeof(float));
        free(host);
    }
    for (int s = 0; s < nseq; s++) {  // the host caches' tokens, as decode_forward keeps them
        KvCache *c = seqs[s].cache;
        for (int i = 0; i < seqs[s].n; i++) tokvec_push(&c->tokens, seqs[s].tokens[i]);
        if ((int64_t)c->tokens.len > c->written) c->written = (int64_t)c->tokens.len;
    }
    free(out_row);
    return 0;
}

static inline Decoder decoder_gpu(GpuDecoder *g) {
    Decoder d = {gpu_decoder_step, g, &g->m.c};
    return d;
}

#endif
