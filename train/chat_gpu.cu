/*
 * chat_gpu.cu: the `chat_gpu` program: talk to the character on an NVIDIA GPU, with the flags,
 * commands and batch mode of `chat` (train/chat_cli.h says what they do). The model is
 * train/model_gpu.cuh's (the frozen projections in NF4, embeddings, norms, head and LoRA in
 * bf16), each step train/decode_gpu.cuh's, the KV caches on the device; the tokens, the
 * conversation and the sampling stay on the host, as in `chat`.
 *
 *   ./chat_gpu --model DIR|FILE.gguf [--adapter DIR] [--system TEXT] [options]
 *   ./chat_gpu --model DIR --batch REQUESTS.jsonl --out ANSWERS.jsonl [--slots 16]
 */
#include "decode_gpu.cuh"

extern "C" {
#include "chat_cli.h"
#include "peft_adapter.h"
}

static int gpu_load(const ChatLoad *l, Decoder *d, char *info, size_t n, char *err) {
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess || count == 0)
        return set_error(err, "no CUDA GPU found (%s); chat runs on the CPU",
                         e != cudaSuccess ? cudaGetErrorString(e) : "cudaGetDeviceCount: 0 devices"), 1;
    if (l->frozen != FROZEN_NF4)
        return set_error(err, "--weights: chat_gpu holds the frozen weights in NF4 only (chat takes bf16 and f32)"), 1;
    ModelConfig c;
    if (model_config_load(&c, l->model, err)) return 1;
    if (c.head_dim != 64 && c.head_dim != 96 && c.head_dim != 128)
        return set_error(err, "%s: head_dim %d: the attention kernels take 64, 96 or 128", l->model, c.head_dim), 1;
    if (c.hidden_size % 32 || c.intermediate_size % 32 || (c.num_attention_heads * c.head_dim) % 32)
        return set_error(err, "%s: the NF4 matrix-vector product needs sizes in multiples of 32", l->model), 1;
    Model host;  // the adapter's settings and matrices, on the host first
    model_init_empty(&host, &c);
    if (l->adapter && peft_adapter_load(&host, l->adapter, err)) {
        model_free(&host);
        return 1;
    }
    unsigned targets = 0;
    for (int i = 0; i < c.num_hidden_layers; i++)
        for (int p = 0; p < N_PROJ; p++) targets |= host.layers[i].proj[p].A ? 1u << p : 0;
    GpuDecoder *g = (GpuDecoder *)xmalloc(sizeof(GpuDecoder));
    gpu_decoder_init(g, &c, host.lora_r, targets, host.lora_scale, l->sequences, l->context);
    if (gpu_model_load(&g->m, l->model, err)) {
        gpu_decoder_free(g);
        free(g);
        model_free(&host);
        return 1;
    }
    for (int i = 0; i < c.num_hidden_layers; i++)
        for (int p = 0; p < N_PROJ; p++) {
            const Linear *x = &host.layers[i].proj[p];
            if (!x->A) continue;
            gpu_lora_set(&g->m, i, p, 0, x->A, NULL, NULL);
            gpu_lora_set(&g->m, i, p, 1, x->B, NULL, NULL);
        }
    cudaDeviceProp prop;
    cuda_check(cudaGetDeviceProperties(&prop, 0));
    int k = snprintf(info, n, "on %s (sm_%d%d), %d device cache(s) of %d positions", prop.name, prop.major, prop.minor,
                     g->sequences, g->slots);
    if (l->adapter && k > 0 && (size_t)k < n)
        snprintf(info + k, n - (size_t)k, "\n  adapter %s: r %d, alpha %g, scale %g", l->adapter, host.lora_r,
                 (double)host.lora_alpha, (double)host.lora_scale);
    model_free(&host);
    *d = decoder_gpu(g);
    return 0;
}

static void gpu_free(Decoder *d) {
    GpuDecoder *g = (GpuDecoder *)d->ctx;
    gpu_decoder_free(g);
    free(g);
    d->ctx = NULL;
}

int main(int argc, char **argv) {
    static const ChatBackend gpu = {"chat_gpu", "on an NVIDIA GPU", "nf4", gpu_load, gpu_free};
    return chat_main(argc, argv, &gpu);
}
