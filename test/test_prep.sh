#!/usr/bin/env bash
# test/test_prep.sh: ./prep end to end (the sanitizer build, so a memory error or undefined
# behaviour changes the exit status and fails the check).
#
#   round trip    shards made from a mixed corpus (conversations, {"text"} lines, weights,
#                 system prompts, Unicode) decode (`prep --dump`) to exactly the ids and
#                 masks of mistral-common's chat formats with mistral-finetune's masking
#                 (scripts/prep_reference.py), for SentencePiece v1, v3, v7 and Tekken; the
#                 headers' trained counts equal the reference masks' sums; --system, the
#                 validation split (fraction, seed, --val FILE), .gz input, thread counts;
#   bad lines     every kind of bad JSONL line is reported as file:line: reason, nothing is
#                 written, --check fails too; --skip-bad writes the same bytes as the clean
#                 subset does;
#   length        --max-len with split / truncate / drop, checked as properties of the
#                 pieces against the unsplit conversations;
#   errors        bad options and files: one line, exit status 1; damaged shards refused by
#                 --info with the failed check named; an interrupted run leaves no shard.
set -u
cd "$(dirname "$0")/.."
. test/lib.sh
: "${SAN_BIN:?}" "${PYTHON:?}" "${TOKENIZER_DATA:?}"
PREP="$SAN_BIN/prep"
REF="$PYTHON scripts/prep_reference.py"
CONV=test/fixtures/conversations.jsonl
MIXED=test/fixtures/prep/mixed.jsonl
V1="$TOKENIZER_DATA/tokenizer.model.v1"
V3="$TOKENIZER_DATA/mistral_instruct_tokenizer_240323.model.v3"
V7="$TOKENIZER_DATA/mistral_instruct_tokenizer_241114.model.v7"
TEKKEN="$TOKENIZER_DATA/tekken_240911.json"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# check NAME GOT WANT: passes when the two strings are equal.
check() {
    if [ "$2" = "$3" ]; then echo "PASS $1"; else echo "FAIL $1"; echo "  got '$2', want '$3'"; fi
}

# run_ok NAME CMD...: runs CMD, which must succeed (its output goes to $tmp/log).
run_ok() {
    local name=$1
    shift
    if "$@" >"$tmp/log" 2>&1; then return 0; fi
    echo "FAIL $name: $* exited with status $?"
    sed 's/^/  /' "$tmp/log" | tail -5
    return 1
}

# info_field SHARD FIELD: a number from `prep --info` ("trained", "conversations", ...).
info_field() { "$PREP" --info "$1" | sed -n "s/.* \([0-9][0-9]*\) $2[,)].*/\1/p"; }

# the number of 1s in the masks of a dump
mask_ones() { grep -o '"mask": \[[^]]*\]' "$1" | tr -cd 1 | wc -c; }

# ---- round trip ------------------------------------------------------------------------

for tok in "$V1" "$V3" "$V7" "$TEKKEN"; do
    t=$(basename "$tok")
    out="$tmp/rt-$t"
    run_ok "roundtrip_$t" "$PREP" --tokenizer "$tok" --out "$out" --val-fraction 0 "$CONV:2" "$MIXED" || continue
    for input in "$CONV" "$MIXED"; do
        src=$(basename "$input" .jsonl)
        $REF --tokenizer "$tok" --jsonl "$input" >"$tmp/ref"
        "$PREP" --dump --tokenizer "$tok" "$out/train-$src.bin" >"$tmp/ours"
        same_output "roundtrip_${t}_${src}_ids_and_masks_vs_mistral_common" "$tmp/ours" "$tmp/ref"
        check "roundtrip_${t}_${src}_trained_count" "$(info_field "$out/train-$src.bin" trained)" "$(mask_ones "$tmp/ref")"
    done
done
"$PREP" --info "$tmp/rt-$(basename "$V3")/train-conversations.bin" >"$tmp/info"
check weight_recorded "$(grep -c 'source "conversations" weight 2,' "$tmp/info")" 1

for tok in "$V3" "$V7"; do
    t=$(basename "$tok")
    run_ok "system_$t" "$PREP" --tokenizer "$tok" --out "$tmp/sys-$t" --val-fraction 0 --system "You are Holmes." "$MIXED" || continue
    $REF --tokenizer "$tok" --jsonl "$MIXED" --system "You are Holmes." >"$tmp/ref"
    "$PREP" --dump "$tmp/sys-$t/train-mixed.bin" >"$tmp/ours"
    same_output "default_system_prompt_${t}_vs_mistral_common" "$tmp/ours" "$tmp/ref"
done
printf 'You are Holmes.\n' >"$tmp/system.txt"
run_ok system_file "$PREP" --tokenizer "$V3" --out "$tmp/sysfile" --val-fraction 0 --system-file "$tmp/system.txt" "$MIXED" &&
    same_output system_file_equals_system "$tmp/sysfile/train-mixed.bin" "$tmp/sys-$(basename "$V3")/train-mixed.bin"

# The validation split: whole conversations, exactly round(fraction x good lines) of them,
# together the same set as without a split; the same seed gives the same bytes.
split_case() {  # name seed out
    run_ok "$1" "$PREP" --tokenizer "$V3" --out "$3" --val-fraction 0.3 --seed "$2" "$CONV" "$MIXED"
}
split_case split_seed5 5 "$tmp/split5" && split_case split_seed5_again 5 "$tmp/split5b" && split_case split_seed6 6 "$tmp/split6"
for src in conversations mixed; do
    cat <("$PREP" --dump "$tmp/split5/train-$src.bin") <("$PREP" --dump "$tmp/split5/val-$src.bin") | sort >"$tmp/ours"
    "$PREP" --dump "$tmp/rt-$(basename "$V3")/train-$src.bin" | sort >"$tmp/ref"
    same_output "split_${src}_train_plus_val_is_everything" "$tmp/ours" "$tmp/ref"
    same_output "split_${src}_same_seed_same_bytes" "$tmp/split5/val-$src.bin" "$tmp/split5b/val-$src.bin"
done
check split_conversations_val_count "$(info_field "$tmp/split5/val-conversations.bin" conversations)" 3  # 0.3 x 10
check split_mixed_val_count "$(info_field "$tmp/split5/val-mixed.bin" conversations)" 2                 # 0.3 x 8 -> 2
if cmp -s "$tmp/split5/val-conversations.bin" "$tmp/split6/val-conversations.bin"; then
    echo "FAIL split_other_seed_other_split"; else echo "PASS split_other_seed_other_split"; fi

run_ok val_file "$PREP" --tokenizer "$V3" --out "$tmp/valfile" --val "$MIXED" "$CONV" &&
    same_output val_file_shard_is_the_val_file "$tmp/valfile/val-mixed.bin" "$tmp/rt-$(basename "$V3")/train-mixed.bin"
"$PREP" --dump "$tmp/valfile/val-mixed.bin" >"$tmp/ours"
$REF --tokenizer "$V3" --jsonl "$MIXED" >"$tmp/ref"
same_output val_file_vs_mistral_common "$tmp/ours" "$tmp/ref"
check val_file_no_fraction "$(ls "$tmp/valfile")" "$(printf 'train-conversations.bin\nval-mixed.bin')"
# With --val nothing is held out of the training sources: the train shard holds all 10
# conversations, the same ids and masks as with --val-fraction 0 (that shard's header
# differs: weight 2), and --check counts them all.
check val_file_trains_on_every_line "$(info_field "$tmp/valfile/train-conversations.bin" conversations)" 10
"$PREP" --dump "$tmp/valfile/train-conversations.bin" >"$tmp/ours"
"$PREP" --dump "$tmp/rt-$(basename "$V3")/train-conversations.bin" >"$tmp/ref"
same_output val_file_train_shard_is_the_whole_source "$tmp/ours" "$tmp/ref"
"$PREP" --tokenizer "$V3" --check --val "$MIXED" "$CONV" >"$tmp/report-val"
check val_file_check_counts_every_line "$(grep -c '^  train 10 conversations' "$tmp/report-val")" 2  # the source and the total

mkdir -p "$tmp/gz"
gzip -c "$MIXED" >"$tmp/gz/mixed.jsonl.gz"
run_ok gzip_input "$PREP" --tokenizer "$V3" --out "$tmp/gzout" --val-fraction 0 "$tmp/gz/mixed.jsonl.gz" &&
    same_output gzip_input_same_shard "$tmp/gzout/train-mixed.bin" "$tmp/rt-$(basename "$V3")/train-mixed.bin"

# More than one block of lines (1 MB each): the thread count changes nothing.
mkdir -p "$tmp/big"
$PYTHON scripts/prep_make_corpus.py ../shared/corpus/sherlock-holmes.txt "$tmp/big/book.jsonl" --mb 2.5
run_ok threads_1 "$PREP" --tokenizer "$V3" --out "$tmp/th1" --threads 1 --max-len 200 "$tmp/big/book.jsonl" &&
    run_ok threads_3 "$PREP" --tokenizer "$V3" --out "$tmp/th3" --threads 3 --max-len 200 "$tmp/big/book.jsonl" &&
    for f in train-book.bin val-book.bin; do same_output "threads_1_and_3_same_$f" "$tmp/th1/$f" "$tmp/th3/$f"; done

# ---- bad lines -------------------------------------------------------------------------

mkdir -p "$tmp/bad" "$tmp/clean"
BAD="$tmp/bad/data.jsonl"
CLEAN="$tmp/clean/data.jsonl"
: >"$BAD"
: >"$CLEAN"
: >"$tmp/expected"
line=0
U='{"role": "user", "content": "q"}'
A='{"role": "assistant", "content": "a"}'
good() { printf '%s\n' "$1" >>"$BAD"; printf '%s\n' "$1" >>"$CLEAN"; line=$((line + 1)); }
bad() {  # name json reason
    printf '%s\n' "$2" >>"$BAD"
    line=$((line + 1))
    printf '%s\t%s\n' "$1" "$BAD:$line: $3" >>"$tmp/expected"
}
good "{\"messages\": [$U, $A]}"
bad invalid_json '{"messages": [}' 'invalid JSON at byte 15'
bad trailing_text '{"text": "ok"} and more' 'invalid JSON: unexpected text after the object at byte 16'
bad not_an_object '[1, 2]' 'not a JSON object'
bad missing_messages '{"conversation": []}' 'no "messages" array (and no "text")'
bad messages_not_array '{"messages": "hello"}' '"messages" is not an array'
bad messages_and_text "{\"messages\": [$U, $A], \"text\": \"x\"}" 'both "messages" and "text" (a line is one or the other)'
bad empty_messages '{"messages": []}' '"messages" is empty'
bad message_not_object '{"messages": ["hi"]}' 'messages[0]: not a JSON object'
bad role_missing "{\"messages\": [{\"content\": \"x\"}, $A]}" 'messages[0]: no string "role"'
bad unknown_role "{\"messages\": [{\"role\": \"tool\", \"content\": \"x\"}, $A]}" 'messages[0]: unknown role "tool" (expected system, user or assistant)'
bad content_missing "{\"messages\": [{\"role\": \"user\"}, $A]}" 'messages[0]: no string "content"'
good '{"text": "A good line between bad ones."}'
bad content_number "{\"messages\": [{\"role\": \"user\", \"content\": 5}, $A]}" 'messages[0]: no string "content"'
bad content_null "{\"messages\": [$U, {\"role\": \"assistant\", \"content\": null}]}" 'messages[1]: no string "content"'
bad content_list "{\"messages\": [$U, {\"role\": \"assistant\", \"content\": [\"a\"]}]}" 'messages[1]: no string "content"'
bad empty_assistant "{\"messages\": [$U, {\"role\": \"assistant\", \"content\": \"\"}]}" 'messages[1]: empty assistant message'
bad empty_text '{"text": ""}' 'empty "text"'
bad text_not_string '{"text": 5}' '"text" is not a string'
bad weight_half "{\"messages\": [$U, {\"role\": \"assistant\", \"content\": \"a\", \"weight\": 0.5}]}" 'messages[1]: "weight" must be 0 or 1'
bad weight_string "{\"messages\": [$U, {\"role\": \"assistant\", \"content\": \"a\", \"weight\": \"0\"}]}" 'messages[1]: "weight" is not a number'
bad no_assistant "{\"messages\": [$U]}" 'no assistant message (nothing to train on)'
bad ends_with_user "{\"messages\": [$U, $A, $U]}" "messages[2]: the last message is a user message; training needs it to be the assistant's"
bad invalid_utf8_content "$(printf '{"messages": [%s, {"role": "assistant", "content": "caf\xe9"}]}' "$U")" 'messages[1]: invalid UTF-8 in "content"'
bad invalid_utf8_text "$(printf '{"text": "\xff\xfe"}')" 'invalid UTF-8 in "text"'
bad control_character "$(printf '{"text": "a\001b"}')" 'invalid JSON: raw control character 0x01 at byte 12'
bad nul_escape '{"text": "a\u0000b"}' '\u0000 escape (NUL character) at byte 12: not supported'
printf '   \n' >>"$BAD"
printf '   \n' >>"$CLEAN"
line=$((line + 1))
good "{\"messages\": [{\"role\": \"system\", \"content\": \"s\"}, $U, $A, $U, {\"role\": \"assistant\", \"content\": \"b\", \"weight\": 0}, $A]}"
good '{"text": "escaped \\\\u0000 is text, not a NUL"}'

"$PREP" --tokenizer "$V3" --out "$tmp/badout" "$BAD" >/dev/null 2>"$tmp/err"
check bad_lines_exit_status $? 1
while IFS=$'\t' read -r name want; do
    if grep -qxF -- "$want" "$tmp/err"; then echo "PASS bad_line_$name"; else
        echo "FAIL bad_line_$name"; echo "  wanted the line: $want"; fi
done <"$tmp/expected"
n_bad=$(wc -l <"$tmp/expected")
check bad_lines_count_reported "$(grep -c "^error: $n_bad bad lines; nothing written" "$tmp/err")" 1
check bad_lines_nothing_written "$(ls -A "$tmp/badout" 2>/dev/null)" ""
"$PREP" --tokenizer "$V3" --check "$BAD" >"$tmp/report" 2>"$tmp/err"
check bad_lines_check_exit_status $? 1
check bad_lines_check_counts "$(grep -c "$((line)) lines: 4 good (2 conversations, 2 text), $n_bad bad, 1 blank" "$tmp/report")" 1
check bad_lines_check_reasons "$(grep -c '  bad lines: 3 invalid JSON; .* 4 no string "content";' "$tmp/report")" 1
run_ok skip_bad "$PREP" --tokenizer "$V3" --out "$tmp/skipped" --skip-bad "$BAD" &&
    check skip_bad_reported "$(grep -c "^prep: --skip-bad: left out $n_bad bad lines" "$tmp/log")" 1
run_ok clean_subset "$PREP" --tokenizer "$V3" --out "$tmp/cleanout" "$CLEAN" &&
    for f in train-data.bin val-data.bin; do same_output "skip_bad_equals_clean_subset_$f" "$tmp/skipped/$f" "$tmp/cleanout/$f"; done

# ---- length policies -------------------------------------------------------------------

# A conversation of many exchanges (with a system prompt), one exchange too long on its
# own, a long text, and a short conversation, at --max-len 64 with SentencePiece v7 (whose
# [SYSTEM_PROMPT] token shows that every piece keeps the persona).
$PYTHON - "$tmp/long.jsonl" <<'EOF'
import json, sys
q = lambda i: {"role": "user", "content": f"Question number {i}: what do you see?"}
a = lambda i: {"role": "assistant", "content": f"Answer {i}: I see everything, Watson, and I observe."}
many = [{"role": "system", "content": "You are Sherlock Holmes."}] + [m for i in range(10) for m in (q(i), a(i))]
many[4]["weight"] = 0
huge = [q(0), {"role": "assistant", "content": " ".join(["elementary"] * 120)}]
lines = [{"messages": many}, {"messages": huge}, {"text": " ".join(f"word{i}" for i in range(150))},
         {"messages": [q(1), a(1)]}]
with open(sys.argv[1], "w") as f:
    for row in lines:
        f.write(json.dumps(row) + "\n")
EOF
run_ok long_full "$PREP" --tokenizer "$V7" --out "$tmp/long-full" --val-fraction 0 "$tmp/long.jsonl" &&
    "$PREP" --dump "$tmp/long-full/train-long.bin" >"$tmp/full.dump"
$REF --tokenizer "$V7" --jsonl "$tmp/long.jsonl" >"$tmp/ref"
same_output long_unsplit_vs_mistral_common "$tmp/full.dump" "$tmp/ref"
for policy in split truncate drop; do
    run_ok "long_$policy" "$PREP" --tokenizer "$V7" --out "$tmp/long-$policy" --val-fraction 0 --max-len 64 --long "$policy" "$tmp/long.jsonl" || continue
    cp "$tmp/log" "$tmp/long-$policy.log"
    "$PREP" --dump "$tmp/long-$policy/train-long.bin" >"$tmp/$policy.dump"
    $PYTHON - "$policy" "$tmp/full.dump" "$tmp/$policy.dump" <<'EOF'
import json, sys
policy, full, got = sys.argv[1], [json.loads(l) for l in open(sys.argv[2])], [json.loads(l) for l in open(sys.argv[3])]
MAX, BOS, EOS = 64, full[0]["ids"][0], full[0]["ids"][-1]
SYSTEM_PROMPT = full[0]["ids"][1]  # [SYSTEM_PROMPT] opens the first conversation
def check(name, ok, detail=""):
    print(("PASS " if ok else "FAIL ") + f"length_{policy}_{name}" + (f"\n  {detail}" if not ok and detail else ""))
def runs(c):  # the trained tokens, as runs
    out, cur = [], []
    for i, m in zip(c["ids"], c["mask"]):
        if m: cur.append(i)
        elif cur: out.append(cur); cur = []
    return out + ([cur] if cur else [])
check("all_within_max_len", all(len(c["ids"]) <= MAX for c in got), [len(c["ids"]) for c in got])
if policy == "drop":
    check("only_the_short_one_left", got == full[3:])
elif policy == "truncate":
    want = [{"ids": c["ids"][:MAX], "mask": c["mask"][:MAX]} for c in full]
    check("prefixes", got == want)
else:
    many = [c for c in got if SYSTEM_PROMPT in c["ids"]]
    check("many_pieces", len(many) >= 3, len(many))
    check("pieces_are_conversations", all(c["ids"][0] == BOS and c["ids"][-1] == EOS and c["mask"][0] == 0 for c in many))
    check("every_piece_keeps_the_system_prompt", all(c["ids"].count(SYSTEM_PROMPT) == 1 for c in many))
    check("trained_answers_all_there_once", sum((runs(c) for c in many), []) == runs(full[0]))
    rest = got[len(many):]
    check("long_exchange_truncated", rest[0] == {"ids": full[1]["ids"][:MAX], "mask": full[1]["mask"][:MAX]})
    chunks = rest[1:-1]
    joined = chunks[0]["ids"] + sum((c["ids"][1:] for c in chunks[1:]), [])
    check("text_chunks_overlap_by_one", joined == full[2]["ids"], [len(c["ids"]) for c in chunks])
    check("text_every_target_once", sum(sum(c["mask"]) for c in chunks) == sum(full[2]["mask"]) and
          all(c["mask"][0] == 0 for c in chunks))
    check("short_unchanged", rest[-1] == full[3])
EOF
done
grep -q "over --max-len 64: 3 (3 split into [0-9]* pieces, 1 truncated, 0 dropped" "$tmp/long-split.log" &&
    echo "PASS length_split_counted" || { echo "FAIL length_split_counted"; grep "over --max-len" "$tmp/long-split.log"; }
grep -q "over --max-len 64: 3 (0 split into 0 pieces, 3 truncated, 0 dropped" "$tmp/long-truncate.log" &&
    echo "PASS length_truncate_counted" || { echo "FAIL length_truncate_counted"; grep "over --max-len" "$tmp/long-truncate.log"; }
grep -q "over --max-len 64: 3 (0 split into 0 pieces, 0 truncated, 3 dropped" "$tmp/long-drop.log" &&
    echo "PASS length_drop_counted" || { echo "FAIL length_drop_counted"; grep "over --max-len" "$tmp/long-drop.log"; }

# ---- --check ---------------------------------------------------------------------------

"$PREP" --tokenizer "$V3" --check --batch 2 --seq-len 64 "$MIXED" >"$tmp/report" 2>"$tmp/err"
check check_exit_status $? 0
check check_line_counts "$(grep -c '9 lines: 8 good (5 conversations, 3 text), 0 bad, 1 blank' "$tmp/report")" 1
"$PREP" --tokenizer "$V3" --check --val-fraction 0 "$MIXED" >"$tmp/report0"
check check_trained_total "$(sed -n 's/^  train .* tokens, \([0-9]*\) trained .*/\1/p' "$tmp/report0" | tail -1)" \
    "$(info_field "$tmp/rt-$(basename "$V3")/train-mixed.bin" trained)"
check check_longest "$(grep -c "longest [0-9]* tokens ($MIXED:[0-9]*)" "$tmp/report")" 2
check check_steps_estimate "$(grep -c '^steps per epoch: about [0-9]* at --batch 2 --seq-len 64' "$tmp/report")" 1
check check_writes_nothing "$(grep -c '^wrote' "$tmp/report")" 0

# ---- errors: one line, exit status 1 ---------------------------------------------------

expect_fail no_tokenizer "--tokenizer FILE is required" "$PREP" --out "$tmp/x" "$CONV"
expect_fail no_source "at least one SOURCE" "$PREP" --tokenizer "$V3" --out "$tmp/x"
expect_fail unknown_option "unknown option" "$PREP" --tokenizer "$V3" --out "$tmp/x" --frobnicate "$CONV"
expect_fail bad_long_policy "--long 'sideways': expected split, truncate or drop" "$PREP" --tokenizer "$V3" --out "$tmp/x" --long sideways "$CONV"
expect_fail bad_fraction "--val-fraction '1.5'" "$PREP" --tokenizer "$V3" --out "$tmp/x" --val-fraction 1.5 "$CONV"
expect_fail val_and_fraction "--val and --val-fraction exclude each other" "$PREP" --tokenizer "$V3" --out "$tmp/x" --val "$MIXED" --val-fraction 0.2 "$CONV"
expect_fail zero_weight "$CONV:0: the weight must be a number > 0" "$PREP" --tokenizer "$V3" --out "$tmp/x" "$CONV:0"
mkdir -p "$tmp/a" "$tmp/b" && cp "$CONV" "$tmp/a/x.jsonl" && cp "$CONV" "$tmp/b/x.jsonl"
expect_fail same_name "would both be shard \"x\"" "$PREP" --tokenizer "$V3" --out "$tmp/x" "$tmp/a/x.jsonl" "$tmp/b/x.jsonl"
expect_fail output_exists "train-conversations.bin exists (--force replaces it)" "$PREP" --tokenizer "$V3" --out "$tmp/split5" "$CONV"
run_ok force_replaces "$PREP" --tokenizer "$V3" --out "$tmp/split5" --force "$CONV" && echo "PASS force_replaces"
expect_fail format_needs_tokens "needs the special token [INST]" "$PREP" --tokenizer "$V1" --out "$tmp/x" --chat-format v3 "$CONV"
expect_fail input_missing "$tmp/none.jsonl: cannot open" "$PREP" --tokenizer "$V3" --out "$tmp/x" "$tmp/none.jsonl"
head -c 300 "$tmp/gz/mixed.jsonl.gz" >"$tmp/gz/cut.jsonl.gz"
expect_fail truncated_gzip "$tmp/gz/cut.jsonl.gz: read error" "$PREP" --tokenizer "$V3" --out "$tmp/x" "$tmp/gz/cut.jsonl.gz"
check nothing_written_on_errors "$(ls -A "$tmp/x" 2>/dev/null)" ""

# Damaged shards, through the program (test_shard.c covers every byte and every cut).
SHARD="$tmp/rt-$(basename "$V3")/train-mixed.bin"
size=$(stat -c %s "$SHARD")
damage() {  # name offset expected-text: flips bits of one byte
    cp "$SHARD" "$tmp/damaged.bin"
    $PYTHON -c "import sys; p, o = sys.argv[1], int(sys.argv[2]); d = bytearray(open(p, 'rb').read()); d[o] ^= 0x55; open(p, 'wb').write(d)" "$tmp/damaged.bin" "$2"
    expect_fail "info_refuses_$1" "$tmp/damaged.bin: $3" "$PREP" --info "$tmp/damaged.bin"
}
damage magic 0 "not a token shard (bad magic"
damage version 8 "shard version 84, this program reads version 1"
damage header 100 "header CRC32 mismatch"
damage index 260 "index section CRC32 mismatch"
damage tokens 400 "tokens section CRC32 mismatch"
damage mask $((size - 2)) "mask section CRC32 mismatch"
head -c $((size - 7)) "$SHARD" >"$tmp/damaged.bin"
expect_fail info_refuses_truncated "$tmp/damaged.bin: truncated" "$PREP" --info "$tmp/damaged.bin"
expect_fail info_refuses_other_tokenizer "made with a different tokenizer" "$PREP" --info --tokenizer "$V7" "$SHARD"
expect_fail dump_refuses_other_tokenizer "made with a different tokenizer" "$PREP" --dump --tokenizer "$TEKKEN" "$SHARD"

# An interrupted run leaves no shard and no temporary file behind. The signal is sent once
# pass 2 is writing: when the process holds the (unlinked) scratch files of the shards.
$PYTHON scripts/prep_make_corpus.py ../shared/corpus/sherlock-holmes.txt "$tmp/big/huge.jsonl" --mb 12
"$PREP" --tokenizer "$V3" --out "$tmp/killed" --threads 1 "$tmp/big/huge.jsonl" >/dev/null 2>&1 &
pid=$!
for _ in $(seq 400); do
    ls -l "/proc/$pid/fd" 2>/dev/null | grep -q "$tmp/killed/" && break
    sleep 0.05
done
kill -TERM "$pid" 2>/dev/null
wait "$pid"
rc=$?
if [ "$rc" -eq 143 ]; then
    check interrupted_run_leaves_nothing "$(ls -A "$tmp/killed" 2>/dev/null)" ""
else
    echo "FAIL interrupted_run_leaves_nothing: prep exited with $rc, not by the signal"
fi
