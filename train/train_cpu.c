/*
 * train_cpu.c: QLoRA fine-tuning of a Mistral/Llama model on the CPU, the readable
 * reference of what train_gpu computes (llm.c's train_gpt2.c in spirit).
 *
 *   ./train_cpu --model DIR --train SHARD... [--val SHARD...] --out RUN_DIR [options]
 *
 * One optimizer step: grad_accum micro-batches of B rows x T positions from the dataloader
 * (packed conversations, data/dataloader.h); the loss is the sum of cross-entropies of the
 * trained targets of the whole step divided by their number (so every trained token of the
 * step weighs the same, however the micro-batches split them); LoRA gradients, clipping by
 * global norm, AdamW with the learning rate of the schedule. Frozen weights are NF4 (or
 * float with --no-nf4).
 *
 * Everything around the step (flags, data, the run directory, resuming, evaluation and
 * sample scheduling, the adapter) is train/run.h, shared with train_gpu: a run directory
 * either trainer started, the other resumes.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <omp.h>

#include "../common/util.h"
#include "../data/dataloader.h"
#include "adamw.h"
#include "generate.h"
#include "matmul.h"
#include "model.h"
#include "run.h"
#include "schedule.h"

// ---------------------------------------------------------------------------------------
// batches into the model

// The rows of a batch that hold data, as one model input: the rows one after the other
// (their segment ids are distinct across rows, data/dataloader.h, so attention stays inside
// each row exactly as if the rows ran one by one). One call for the whole batch lets every
// matrix product work on all its tokens at once.
static double run_batch(Model *m, const Batch *b, float grad_scale, int backward) {
    ModelInput in = {b->rows * b->T, b->inputs, b->positions, b->segments, b->targets, b->weights};
    return model_step(m, &in, grad_scale, backward, NULL);
}

static double seconds_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

// ---------------------------------------------------------------------------------------
// the model work run.c schedules

typedef struct {
    Model *m;
    Batch *b;  // a micro-batch buffer, reused for evaluation
} CpuModel;

static int evaluate(void *ctx, EvalLoader *ev, double *loss_sum, int64_t *trained) {
    CpuModel *c = ctx;
    *loss_sum = 0.0;
    *trained = 0;
    evalloader_rewind(ev);
    while (evalloader_next(ev, c->b)) {
        if (run_stop_signal()) return -1;
        *loss_sum += run_batch(c->m, c->b, 1.0f, 0);
        *trained += c->b->n_trained;
    }
    return 0;
}

// A signal asks the run to stop: the answer ends after the token being made.
static int stop_requested(void *ctx, int32_t id) {
    (void)ctx, (void)id;
    return run_stop_signal() != 0;
}

// With a KV cache: the prompt is read once, then each token costs one position.
static int generate_answer(void *ctx, TokenVec *ids, int max_new, int32_t eos_id, float temperature, float top_p,
                           uint64_t *rng) {
    StopReason why = generate(((CpuModel *)ctx)->m, ids, max_new, eos_id, temperature, top_p, rng, stop_requested, NULL);
    return why == STOP_INTERRUPTED ? -1 : 0;
}

// ---------------------------------------------------------------------------------------
// main

int main(int argc, char **argv) {
    RunOptions o;
    int threads = omp_get_max_threads();
    const char *matmul_kernel = NULL;
    RunFlag own[] = {
        {"--threads", "N", FLAG_INT, &threads,
         "OpenMP threads (default: OMP_NUM_THREADS, else every core);\nthe numbers are the same for any N"},
        {"--matmul-kernel", "K", FLAG_STRING, &matmul_kernel,
         "auto, avx512, avx2 or generic (default auto: the fastest this\nCPU runs); to measure or test a slower one"},
    };
    RunProgram program = {"train_cpu", "QLoRA fine-tuning on the CPU (the reference implementation).", own, 2, NULL};
    if (run_parse_args(&o, &program, argc, argv)) return 1;
    if (threads < 1) {
        fprintf(stderr, "error: --threads must be positive (see --help)\n");
        return 1;
    }
    omp_set_num_threads(threads);
    if (matmul_kernel && matmul_select(matmul_kernel) != 0) {
        fprintf(stderr, "error: --matmul-kernel '%s' is unknown or this CPU cannot run it (see --help)\n",
                matmul_kernel);
        return 1;
    }

    // the model, with LoRA on the targets; its matrices and AdamW moments are the run's parameters
    char err[ERR_LEN];
    Model m = {0};
    Run run = {0};
    RunParam *ps = NULL;
    float **grads = NULL;
    size_t *sizes = NULL;
    Batch *micro = NULL;
    int n_params = 0, rc = 0;
    if (model_load(&m, o.model, !o.no_nf4, err)) {
        fprintf(stderr, "error: %s\n", err);
        rc = 1;
        goto done;
    }
    if ((rc = run_open(&run, &o, NULL))) goto done;
    model_lora_init(&m, o.target_mask, o.lora_r, o.lora_alpha, o.rslora, o.seed);
    ps = xcalloc((size_t)m.c.num_hidden_layers * N_PROJ * 2 + 1, sizeof(RunParam));
    grads = xcalloc((size_t)m.c.num_hidden_layers * N_PROJ * 2 + 1, sizeof(float *));
    sizes = xcalloc((size_t)m.c.num_hidden_layers * N_PROJ * 2 + 1, sizeof(size_t));
    for (int i = 0; i < m.c.num_hidden_layers; i++)
        for (int p = 0; p < N_PROJ; p++) {
            Linear *l = &m.layers[i].proj[p];
            for (int k = 0; k < 2 && l->A; k++) {
                size_t n = k ? (size_t)l->out * m.lora_r : (size_t)m.lora_r * l->in;
                ps[n_params] = run_lora_param(i, p, k, m.lora_r, l->in, l->out, k ? l->B : l->A,
                                              xcalloc(n, sizeof(float)), xcalloc(n, sizeof(float)));
                grads[n_params] = k ? l->dB : l->dA;
                sizes[n_params++] = n;
            }
        }
    micro = xcalloc((size_t)o.grad_accum, sizeof(Batch));
    for (int a = 0; a < o.grad_accum; a++) batch_init(&micro[a], o.batch, o.seq_len);
    CpuModel cpu = {&m, &micro[0]};
    RunHooks hooks = {&cpu, evaluate, generate_answer, NULL};
    if ((rc = run_start(&run, ps, n_params, &hooks))) goto done;
    run_print_config(&run, "train_cpu", o.no_nf4 ? "float32" : "NF4");
    printf("  %d thread(s), %s matrix kernel\n", omp_get_max_threads(), matmul_kernel_name());

    AdamWConfig opt = {0.9f, 0.999f, 1e-8f, o.weight_decay};
    m.lora_dropout = o.lora_dropout;
    m.dropout_rng = run.state.dropout_rng;  // the model draws its masks from the run's generator
    while (run_next(&run)) {
        double t0 = seconds_now();
        int64_t trained = 0;
        for (int a = 0; a < o.grad_accum; a++) {
            if (dataloader_next(run.dl, &micro[a], err)) {
                fprintf(stderr, "error: %s\n", err);
                rc = 2;
                goto done;
            }
            trained += micro[a].n_trained;
        }
        for (int i = 0; i < n_params; i++) memset(grads[i], 0, sizes[i] * sizeof(float));
        double loss = 0.0;  // the step's loss: every trained target of all micro-batches weighs the same
        for (int a = 0; a < o.grad_accum; a++) loss += run_batch(&m, &micro[a], 1.0f / (float)trained, 1);
        loss /= (double)trained;
        double norm = o.clip > 0 ? grad_clip(grads, sizes, n_params, o.clip) : grad_global_norm(grads, sizes, n_params);
        int64_t step = run.state.step;
        float lr = (float)(o.lr * schedule_multiplier(o.schedule_kind, step, o.warmup, o.steps));
        for (int i = 0; i < n_params; i++)
            adamw_step(ps[i].p, grads[i], ps[i].m, ps[i].v, ps[i].n, (int)step + 1, lr, &opt);
        run.state.dropout_rng = m.dropout_rng;
        RunStep s = {loss, lr, norm, trained, (double)o.grad_accum * o.batch * o.seq_len, seconds_now() - t0, NULL, 0};
        if ((rc = run_step_done(&run, &s))) goto done;
    }
    rc = run_finish(&run);
done:
    for (int a = 0; micro && a < o.grad_accum; a++) batch_free(&micro[a]);
    for (int i = 0; i < n_params; i++) free(ps[i].m), free(ps[i].v);
    free(micro), free(ps), free(grads), free(sizes);
    run_close(&run);
    if (m.layers) model_free(&m);
    return rc;
}
