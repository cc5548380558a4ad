/*
 * run.h: what the two trainers share around the model, so train_cpu and train_gpu are one
 * program with two engines: the command line, the data, the run directory (log,
 * checkpoint, samples, adapter), resuming, and when to evaluate, sample and save. A driver
 * owns the model and the arithmetic of a step; this module owns everything else.
 *
 * A driver, top to bottom:
 *
 *   RunOptions o;                          the shared flags, plus the driver's own (RunFlag)
 *   run_parse_args(&o, &program, argc, argv);
 *   Run run;
 *   run_open(&run, &o);                    config.json, tokenizer, shards, data loaders
 *   ... load the model, add LoRA, describe each LoRA matrix (run_lora_param) ...
 *   run_start(&run, params, n, &hooks);    run directory; resumes from its checkpoint
 *   run_print_config(&run, ...);
 *   while (run_next(&run)) {               until the last step, or SIGINT/SIGTERM
 *       ... batches from run.dl, forward, backward, clip, AdamW at step run.state.step + 1 ...
 *       if ((rc = run_step_done(&run, &stats))) break;   logs; evaluates, samples, saves when due
 *   }
 *   rc = rc ? rc : run_finish(&run);       the adapter; the exit status
 *   run_close(&run);
 *
 * The parameters are host arrays (RunParam: name, size, weights, AdamW moments). The CPU
 * driver points them at its model; the GPU driver keeps host mirrors and copies the device
 * state into them in hooks.to_host, which the module calls before it saves a checkpoint or
 * exports the adapter. Model work the module schedules (evaluation, probe answers) goes
 * through RunHooks.
 *
 * The run directory:
 *   log.jsonl                 {"step", "loss", "lr", "grad_norm", "trained", "tokens_per_s", and
 *                             the driver's extra fields} per step, {"step", "val_loss",
 *                             "val_trained"} per evaluation
 *   samples.jsonl             {"step", "prompt", "text"} for each probe prompt
 *   checkpoint.safetensors    every RunParam (NAME, NAME.adam_m, NAME.adam_v, F32), the data
 *                             loader's state (run.dataloader, U8), [step, sample_rng,
 *                             dropout_rng] (run.scalars, I64); metadata: "format", "settings"
 *                             (what must not change on resume) and a CRC32 of every tensor
 *   adapter/                  the adapter in PEFT's format, written at the end
 * A run directory with a checkpoint is resumed by either trainer: the log is cut back to the
 * checkpoint's step and training continues exactly as if it had never stopped (same
 * batches, same numbers). SIGINT and SIGTERM finish the current step, write a checkpoint
 * and stop.
 */
#ifndef PERSONA_RUN_H
#define PERSONA_RUN_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "../data/dataloader.h"
#include "../tokenizer/tokenizer.h"
#include "config.h"
#include "schedule.h"

#define RUN_MAX_SHARDS 256

// ---------------------------------------------------------------------------------------
// the command line

typedef struct {
    const char *path[RUN_MAX_SHARDS];
    int n;
} RunPaths;

typedef enum { FLAG_SWITCH, FLAG_INT, FLAG_FLOAT, FLAG_U64, FLAG_STRING, FLAG_PATHS } FlagType;

// One flag: its name, the placeholder of its value (NULL for a switch, which sets an int to
// 1), where the value goes (int *, float *, uint64_t *, const char **, RunPaths *), and its
// help text (lines after the first separated by '\n'; the default stated in it). Numbers
// must be whole numbers or finite floats, every character of them.
typedef struct {
    const char *name, *metavar;
    FlagType type;
    void *dest;
    const char *help;
} RunFlag;

// The flags both trainers take; run_parse_args sets the defaults.
typedef struct {
    const char *model, *out, *tokenizer, *targets, *schedule, *prompts;
    RunPaths train, val;
    int seq_len, batch, grad_accum, steps, warmup, lora_r, rslora, no_nf4;
    int eval_every, sample_every, sample_tokens, checkpoint_every;
    float lr, weight_decay, clip, lora_alpha, lora_dropout, temperature, top_p;
    uint64_t seed;
    unsigned target_mask;        // --lora-targets resolved (bit p = projection p, model.h)
    ScheduleKind schedule_kind;  // --schedule resolved
} RunOptions;

// A program: its name, one line saying what it is, and the flags only it takes (listed
// after the shared ones in --help).
typedef struct {
    const char *name, *summary;
    const RunFlag *flags;
    int n_flags;
} RunProgram;

// Fills o with the defaults, then parses argv: the shared flags into o, the program's own
// into their destinations. --help prints the usage and exits 0. Checks the shared flags.
// Returns 0, or -1 after printing one line (unknown flag, missing or malformed value, a
// value out of range); the program then exits 1.
int run_parse_args(RunOptions *o, const RunProgram *p, int argc, char **argv);

// ---------------------------------------------------------------------------------------
// the trainable state

// One trainable matrix, in host memory: its checkpoint name, where it sits in the model,
// its shape, its weights and AdamW moments. The arrays are the driver's.
typedef struct {
    char name[96];         // "layers.{i}.{q_proj|...|down_proj}.lora_{A|B}"
    int layer, proj, is_b;  // LoRA B (is_b) or A of projection proj (model.h) of a layer
    int rows, cols;         // [r, in] for A, [out, r] for B
    size_t n;               // rows * cols
    float *p, *m, *v;
} RunParam;

// LoRA matrix A (is_b = 0) or B of projection proj of a layer, rank r, in -> out features.
RunParam run_lora_param(int layer, int proj, int is_b, int r, int in, int out, float *p, float *m, float *v);

// ---------------------------------------------------------------------------------------
// the run

// The model work the module schedules, done by the driver. ctx is passed back.
typedef struct {
    void *ctx;
    // The summed loss over every trained target of the validation loader's batches (rewound
    // first) into *loss_sum, their number into *trained. Returns 0.
    int (*evaluate)(void *ctx, EvalLoader *ev, double *loss_sum, int64_t *trained);
    // Appends up to max_new tokens to ids (which holds a prompt), stopping after eos_id;
    // sampling as generate.h says. Returns 0.
    int (*generate)(void *ctx, TokenVec *ids, int max_new, int32_t eos_id, float temperature, float top_p,
                    uint64_t *rng);
    // Brings the LoRA weights and AdamW moments into the RunParam arrays (the GPU driver's
    // device-to-host copy); NULL when they live there. Returns 0 or -1 with err.
    int (*to_host)(void *ctx, char *err);
} RunHooks;

typedef struct {
    int64_t step;          // optimizer steps done
    uint64_t sample_rng;   // the probe answers' generator
    uint64_t dropout_rng;  // LoRA dropout's generator: the driver's model draws from it and
                           // stores it back here after each step
} RunState;

// One extra number of a step's log line (the GPU driver's ms, MFU, memory): written as
// "key": value with the printf format (of a double), and " | key value" on the console.
typedef struct {
    const char *key, *format;
    double value;
} RunLogField;

// What a step measured.
typedef struct {
    double loss, lr, grad_norm;
    int64_t trained;    // trained targets of the step
    double tokens;      // positions the step ran (trained or not)
    double seconds;     // the step's wall time
    const RunLogField *extra;
    int n_extra;
} RunStep;

typedef struct {
    const RunOptions *o;
    ModelConfig config;       // --model's config.json
    Tokenizer tok;            // --tokenizer, when given (tok.kind != 0)
    uint64_t fingerprint;     // of --tokenizer; 0 = any
    Dataloader *dl;           // the training batches
    EvalLoader *ev;           // the validation batches; NULL without --val
    RunParam *params;         // the driver's
    int n_params;
    RunHooks hooks;
    RunState state;
    FILE *log;
    char settings[512];
    char ckpt_path[4096], log_path[4096], samples_path[4096], adapter_path[4096];
} Run;

// Reads --model's config.json and --tokenizer, checks every shard (fingerprint, a
// vocabulary within the model's embeddings) and opens the data loaders. Returns 0, or 1
// (bad input) with one line printed. run_close frees what was opened either way.
int run_open(Run *r, const RunOptions *o);

// Creates or resumes the run directory with the driver's parameters (already initialised:
// a fresh run starts from them; a resumed one overwrites them from the checkpoint) and
// installs the SIGINT/SIGTERM handlers. Returns 0, 1 (bad input: a checkpoint that does not
// fit) or 2, with one line printed.
int run_start(Run *r, RunParam *params, int n_params, const RunHooks *hooks);

// The resolved configuration, printed first: the program, the model, LoRA, data, schedule.
// `frozen` names how the frozen weights are held ("NF4", "float32", ...).
void run_print_config(const Run *r, const char *program, const char *frozen);

// 1 while steps remain and no signal asked to stop.
int run_next(const Run *r);

// After a step's update: counts it, logs it, then evaluates, samples and writes a
// checkpoint when they are due. Returns 0, or 2 (runtime failure) with one line printed.
int run_step_done(Run *r, const RunStep *s);

// After the loop: reports a stop by signal, or exports the adapter of a finished run.
// Returns the exit status.
int run_finish(Run *r);

void run_close(Run *r);

// The signal that asked the run to stop (SIGINT, SIGTERM), or 0.
int run_stop_signal(void);

#endif
