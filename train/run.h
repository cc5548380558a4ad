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
 *   ... load the model ...
 *   Run run;
 *   run_open(&run, &o, comm);              every input checked; the data loaders (comm:
 *                                          the ranks of a data-parallel run, or NULL)
 *   ... add LoRA to the model, describe each LoRA matrix (run_lora_param) ...
 *   run_start(&run, params, n, &hooks);    run directory; resumes from its checkpoint
 *   run_print_config(&run, ...);
 *   while (run_next(&run)) {               until the last step, or SIGINT/SIGTERM
 *       ... batches from run.dl, forward, backward, clip, AdamW at step run.state.step + 1 ...
 *       if ((rc = run_step_done(&run, &stats))) break;   logs; evaluates, samples, saves when due
 *   }
 *   rc = rc ? rc : run_finish(&run);       the adapter; the exit status
 *   run_close(&run);
 *
 * run_open reads the model's config.json itself, so a driver with a long model load may call
 * it first, to refuse bad data in seconds. The parameters are host arrays (RunParam: name,
 * size, weights, AdamW moments). The CPU driver points them at its model; the GPU driver
 * keeps host mirrors and copies the device state into them in hooks.to_host, which the
 * module calls before it saves a checkpoint or exports the adapter. Model work the module
 * schedules (evaluation, probe answers) goes through RunHooks.
 *
 * The run directory (every file written through a temporary name and a rename, fsynced):
 *   log.jsonl                 {"step", "loss", "lr", "grad_norm", "trained", "tokens_per_s", and
 *                             the driver's extra fields} per step, {"step", "val_loss",
 *                             "val_trained"} per evaluation; a value that is not finite is null
 *   samples.jsonl             {"step", "prompt", "text"} for each probe prompt
 *   checkpoint.safetensors    every RunParam (NAME, NAME.adam_m, NAME.adam_v, F32), the data
 *                             loader's state (run.dataloader, U8), [step, dropout_rng]
 *                             (run.scalars, I64); metadata: "format" (persona.c checkpoint v2),
 *                             "settings" (what must not change on resume, flag -> value) and a
 *                             CRC32 of every tensor
 *   adapter/                  the adapter in PEFT's format, written at the end
 *   DONE                      {"step", "checkpoint_crc32"}: the run finished; written last
 * A checkpoint at step s is taken right after step s's update, before that step's evaluation
 * and samples, whenever one is due (every --checkpoint-every steps, the last step, a stop).
 *
 * Resuming. A run directory is resumed by either trainer. The log is cut back to what the
 * checkpoint covers (the step lines up to s; nothing at all when there is no checkpoint),
 * samples.jsonl likewise, and the evaluation and samples due at step s are done again, so
 * that a run stopped at any moment (SIGINT, kill -9, power loss) and resumed writes the same
 * log, checkpoint and adapter as one that never stopped. The settings that shape the
 * numbers may not change: --model (its architecture), --train (the shards), --seq-len,
 * --batch, --grad-accum, --lr, --schedule, --warmup, --weight-decay, --clip, --lora-r,
 * --lora-alpha, --rslora, --lora-dropout, --lora-targets, --seed, --no-nf4; a change is
 * refused naming the flag, the checkpoint's value and the new one. Everything else may:
 * --steps (to extend a run; the schedule is then that of the new length from here on),
 * --val, --eval-every, --checkpoint-every, --prompts, --sample-every, --sample-tokens,
 * --temperature, --top-p and each driver's own flags (threads, kernels).
 *
 * Stopping. SIGINT or SIGTERM stops the run promptly: the step in progress finishes and is
 * saved; an evaluation or probe answers in progress are abandoned (the resumed run does them
 * again); a second signal ends the process at once (the files are whole either way). The
 * last step writes its checkpoint, then the adapter, then evaluates and answers the probes,
 * then DONE. Exit status: 0 for a finished run, 128 + the signal (130, 143) for a run
 * stopped by one (resumable), 1 for bad input, 2 for a runtime failure; a loss or a
 * gradient norm that is not finite stops the run with status 2 and keeps the last good
 * checkpoint.
 *
 * Several ranks (train_gpu under mpirun; RunComm). Every rank is a process with the whole
 * model, the same parameters and its own share of the data: the loaders' partition, for
 * training and for evaluation (dataloader.h). Every rank runs this module's calls in the same
 * order, and the module keeps them in step: rank 0 alone touches the run directory (lock,
 * log, samples, checkpoint, adapter, DONE) and answers the probe prompts; every rank
 * evaluates its share of --val, and the sums are reduced; after each step the ranks agree
 * on the worst status any of them had and on whether any was asked to stop (a signal reaches
 * the ranks at different moments, and they must stop after the same step). A checkpoint
 * holds every rank's loader state, gathered to rank 0 before it writes: that gather is the
 * barrier by which every rank has reached the checkpoint's step before rank 0 declares it
 * done (st_write's rename). With it rank 0 gathers a CRC32 of every rank's LoRA weights and
 * moments, which must be equal (the ranks take the same steps on the same gradients), and
 * stops the run with status 2 naming the rank that differs. A resumed run's parameters and
 * loader states are read by rank 0 and sent to the others (no shared file system needed).
 * The number of ranks is a setting ("mpirun -np"): a resume with another number is refused.
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
    // One of the program's own switches (its dest), or NULL: when it is set, nothing is
    // trained, so --train and --out are not required (train_gpu --dry-run).
    const int *plans_only;
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

// The ranks of a data-parallel run. Collective operations: every rank calls them, in the same
// order.
typedef struct {
    int rank, world;
    void *ctx;  // passed back
    // x[0..n) <- their sums over the ranks, on every rank
    void (*sum)(void *ctx, double *x, int n);
    // x[0..n) <- their maxima over the ranks, on every rank
    void (*max)(void *ctx, int *x, int n);
    // rank 0's n bytes at buf into buf on every rank
    void (*broadcast)(void *ctx, void *buf, size_t n);
    // every rank's n bytes at mine into rank 0's all [world * n], in rank order
    void (*gather)(void *ctx, const void *mine, void *all, size_t n);
} RunComm;

// The model work the module schedules, done by the driver. ctx is passed back.
typedef struct {
    void *ctx;
    // The summed loss over every trained target of the validation loader's batches (rewound
    // first) into *loss_sum, their number into *trained. Returns 0, or -1 when it stopped
    // early because run_stop_signal() became set (checked between batches).
    int (*evaluate)(void *ctx, EvalLoader *ev, double *loss_sum, int64_t *trained);
    // Appends up to max_new tokens to ids (which holds a prompt), stopping after eos_id;
    // sampling as generate.h says. Returns 0, or -1 when a signal stopped it (checked
    // between tokens).
    int (*generate)(void *ctx, TokenVec *ids, int max_new, int32_t eos_id, float temperature, float top_p,
                    uint64_t *rng);
    // Brings the LoRA weights and AdamW moments into the RunParam arrays (the GPU driver's
    // device-to-host copy); NULL when they live there. Returns 0 or -1 with err.
    int (*to_host)(void *ctx, char *err);
} RunHooks;

typedef struct {
    int64_t step;          // optimizer steps done
    uint64_t dropout_rng;  // LoRA dropout's generator: the driver's model draws from it and
                           // stores it back here after each step
} RunState;

// One extra number of a step's log line (the GPU driver's ms, MFU, memory): written as
// "key": value with the printf format (of a double), and " | key value" on the console.
typedef struct {
    const char *key, *format;
    double value;
} RunLogField;

// What a step measured; with several ranks, the whole step's (every rank's, summed), the same
// on every rank.
typedef struct {
    double loss, lr, grad_norm;
    int64_t trained;    // trained targets of the step
    double tokens;      // positions the step ran (trained or not)
    double seconds;     // the step's wall time
    const RunLogField *extra;
    int n_extra;
} RunStep;

// A probe prompt, read and encoded when the run opens.
typedef struct {
    char *text;    // the line, NUL-terminated
    TokenVec ids;  // chat-encoded: the user turn, ready for the answer
} RunPrompt;

typedef struct {
    const RunOptions *o;
    const RunComm *comm;      // never NULL: a single rank when run_open was given none
    ModelConfig config;       // --model's config.json
    Tokenizer tok;            // --tokenizer, when given (tok.kind != 0)
    uint64_t fingerprint;     // the shards' tokenizer; 0 = not known
    Dataloader *dl;           // the training batches
    EvalLoader *ev;           // the validation batches; NULL without --val
    RunPrompt *prompts;       // --prompts
    int n_prompts;
    RunParam *params;         // the driver's
    int n_params;
    RunHooks hooks;
    RunState state;
    int64_t saved_step;       // the step of the checkpoint on disk; -1 = none
    char saved_crc[16];       // and its CRC32
    int post_pending;         // the evaluation and samples of state.step are still to do
    int done;                 // DONE was found: the run finished before this process started
    int failed;               // the exit status of a failure in run_next, or 0
    int stop;                 // the signal some rank received, as the ranks last agreed; 0: none
    uint8_t *loader_states;   // a resumed checkpoint's loader states, every rank's (rank 0, until sent)
    int lock_fd, log_fd;
    char *settings;           // what a resume must agree on (JSON, flag -> value)
    char ckpt_path[4096], log_path[4096], samples_path[4096], adapter_path[4096], done_path[4096];
} Run;

// Checks every input before anything is computed: --model's config.json, --tokenizer (its
// vocabulary within the model's embeddings), the model directory's own tokenizer files,
// every shard (all made with one tokenizer, that of --tokenizer and of the model directory
// when they have one, a vocabulary within the model's embeddings), --prompts (each line
// encoded; a prompt and its answer must fit in --seq-len), and that no input is an output.
// Opens the data loaders, with this rank's share (comm NULL: one rank). Returns 0, or 1 (bad
// input) with one line printed: by rank 0, or by a rank that alone found a problem, naming
// itself; every rank returns the same. run_close frees what was opened either way.
int run_open(Run *r, const RunOptions *o, const RunComm *comm);

// The ranks agree on a status, for the driver's own checks after run_open (the GPU, the
// weights): returns the worst status any rank had. When one failed, one line: "error: ERR"
// from rank 0, or "error: rank N: ERR" from a rank that failed where rank 0 did not (a file
// missing on one node, say). err: this rank's reason, read when status != 0.
int run_agree(Run *r, int status, const char *err);

// Creates or resumes the run directory with the driver's parameters (already initialised,
// the same on every rank: a fresh run starts from them; a resumed one overwrites them from
// the checkpoint, on every rank): locks
// it against a second trainer, removes stale temporaries of ours (each named), cuts the log
// back (see above), and installs the SIGINT/SIGTERM handlers. Returns 0, 1 (bad input: a
// checkpoint of other settings, a damaged one) or 2, with one line printed.
int run_start(Run *r, RunParam *params, int n_params, const RunHooks *hooks);

// The resolved configuration, printed first: the program, the model, LoRA, data, schedule.
// `frozen` names how the frozen weights are held ("NF4", "float32", ...).
void run_print_config(const Run *r, const char *program, const char *frozen);

// 1 while steps remain and no signal asked any rank to stop. (First does what a resumed run
// still owes its checkpoint's step: the evaluation and samples due there.)
int run_next(Run *r);

// After a step's update: counts it and logs it; refuses a loss or gradient norm that is not
// finite; writes a checkpoint when one is due; then evaluates and samples when due. Returns
// 0, or 2 (runtime failure) with one line printed.
int run_step_done(Run *r, const RunStep *s);

// After the loop. For a finished run: the adapter, the final evaluation and samples, DONE.
// For a stopped one: the checkpoint if the stop came after the last one, and a message.
// Returns the exit status (0, 128 + signal, or 2).
int run_finish(Run *r);

void run_close(Run *r);

// The checkpoint file on its own (checkpoint_save and checkpoint_load go through these; so
// does the checkpoint reader's fuzz target, which has no whole run).
// Writes params (weights and AdamW moments), every rank's data loader state (loader_states,
// loader_bytes in all: dataloader_state_size per rank, in rank order) and *state to path
// (temporary name, rename), with the settings (JSON, flag -> value); crc receives the CRC32
// it records, as 8 hex digits. Returns 0 or -1 with err.
int checkpoint_write(const char *path, const RunParam *params, int n, const uint8_t *loader_states, size_t loader_bytes,
                     const RunState *state, const char *settings, char crc[16], char *err);
// Reads the checkpoint at path and checks all of it: the format, the settings against this
// run's (a difference named), every parameter's three tensors by name, type and size, the
// run state, the CRC32, a step in [1, steps], the loader states (one per rank of world; rank
// 0's restored into dl). Only when all of it checks out are the parameters, *state, crc and
// (unless NULL) *loader_states (every rank's, malloc'd) written. Returns 0 or -1 with
// "path: reason" in err.
int checkpoint_read(const char *path, const RunParam *params, int n, const char *settings, int steps, int world,
                    Dataloader *dl, RunState *state, uint8_t **loader_states, char crc[16], char *err);

// The signal that asked this process to stop (SIGINT, SIGTERM), or 0.
int run_stop_signal(void);

#endif
