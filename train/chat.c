/*
 * chat.c: the `chat` program: talk to the character on the CPU (chat_cli.h says what it
 * does). The model is train/model.c's, held as --weights says (the LM head in bf16 unless
 * float32), the adapter applied unmerged, each step decode.h's decode_forward on OpenMP
 * threads.
 */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

#include "../common/util.h"
#include "chat_cli.h"
#include "matvec.h"
#include "model.h"
#include "peft_adapter.h"

static int cpu_load(const ChatLoad *l, Decoder *d, char *info, size_t n, char *err) {
    if (l->threads) omp_set_num_threads(l->threads);
    Model *m = xmalloc(sizeof(Model));
    if (model_load(m, l->model, l->frozen, err) || (l->adapter && peft_adapter_load(m, l->adapter, err))) {
        if (m->layers) model_free(m);
        free(m);
        return 1;
    }
    if (l->frozen != FROZEN_F32) model_head_to_bf16(m);
    *d = decoder_cpu(m);
    int k = snprintf(info, n, "%son the CPU, %d threads, %s kernels", m->head ? "" : "head bf16, ",
                     omp_get_max_threads(), matvec_kernel_name());
    if (l->adapter && k > 0 && (size_t)k < n)
        snprintf(info + k, n - (size_t)k, "\n  adapter %s: r %d, alpha %g, scale %g", l->adapter, m->lora_r,
                 (double)m->lora_alpha, (double)m->lora_scale);
    return 0;
}

static void cpu_free(Decoder *d) {
    Model *m = d->ctx;
    model_free(m);
    free(m);
    d->ctx = NULL;
}

int main(int argc, char **argv) {
    static const ChatBackend cpu = {"chat", "on the CPU", NULL, cpu_load, cpu_free};
    return chat_main(argc, argv, &cpu);
}
