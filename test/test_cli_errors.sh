#!/usr/bin/env bash
# test/test_cli_errors.sh: bad input to ./tokenize gives one clear line on stderr and exit
# status 1, never a crash (this runs the sanitizer build, so a memory error or undefined
# behaviour would change the exit status and fail the check).
set -u
cd "$(dirname "$0")/.."
. test/lib.sh
: "${TOKENIZE:?}" "${TOKENIZER_DATA:?}"
V3="$TOKENIZER_DATA/mistral_instruct_tokenizer_240323.model.v3"
TEKKEN="$TOKENIZER_DATA/tekken_240718.json"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "hello" >"$tmp/text"

# tokenizer files
expect_fail missing_tokenizer_option "--tokenizer FILE is required" "$TOKENIZE" --file "$tmp/text"
expect_fail unknown_option "unknown option" "$TOKENIZE" --tokenizer "$V3" --frobnicate
expect_fail tokenizer_not_found "cannot open" "$TOKENIZE" --tokenizer "$tmp/none.model" --file "$tmp/text"
head -c 300000 "$V3" >"$tmp/truncated.model"
expect_fail truncated_tokenizer_model "$tmp/truncated.model: offset" "$TOKENIZE" --tokenizer "$tmp/truncated.model" --file "$tmp/text"
printf 'not a model at all' >"$tmp/garbage.model"
expect_fail garbage_tokenizer_model "$tmp/garbage.model" "$TOKENIZE" --tokenizer "$tmp/garbage.model" --file "$tmp/text"
head -c 5000000 "$TEKKEN" >"$tmp/truncated-tekken.json"
expect_fail truncated_tekken_json "$tmp/truncated-tekken.json" "$TOKENIZE" --tokenizer "$tmp/truncated-tekken.json" --file "$tmp/text"
echo '{"vocab": []}' >"$tmp/no-config-tekken.json"
expect_fail tekken_json_without_config "config" "$TOKENIZE" --tokenizer "$tmp/no-config-tekken.json" --file "$tmp/text"
# a tokenizer.json whose one token has id 10^9 (found by fuzz_bytelevel): refused, not 48 GB
# of token table allocated (that was "out of memory", exit status 2)
echo '{"model": {"type": "BPE", "vocab": {"a": 1000000000}, "merges": []}}' >"$tmp/huge-id-tokenizer.json"
expect_fail tokenizer_json_huge_token_id "token id 1000000000 with only 1 tokens defined" "$TOKENIZE" --tokenizer "$tmp/huge-id-tokenizer.json" --file "$tmp/text"
# a message quoting the input (a role with a newline, found by fuzz_conversation) stays one line
printf '{"messages": [{"role": "a\\nb", "content": "x"}, {"role": "assistant", "content": "y"}]}\n' >"$tmp/newline-role.jsonl"
expect_fail message_with_newline_is_one_line 'unknown role "a\nb"' "$TOKENIZE" --tokenizer "$V3" --chat "$tmp/newline-role.jsonl"
expect_fail input_not_found "cannot open" "$TOKENIZE" --tokenizer "$V3" --file "$tmp/none.txt"

# --decode
echo "1 2 abc" >"$tmp/ids"
expect_fail decode_not_a_number "$tmp/ids:1: 'abc' is not a token id" "$TOKENIZE" --tokenizer "$V3" --decode --file "$tmp/ids"
printf '5\n99999\n' >"$tmp/ids"
expect_fail decode_out_of_range "$tmp/ids:2: token 0: id 99999 outside the vocabulary" "$TOKENIZE" --tokenizer "$V3" --decode --lines --file "$tmp/ids"
expect_fail decode_out_of_range_tekken "token 0: id 99999999 outside the vocabulary (0..131071)" sh -c "echo 99999999 | '$TOKENIZE' --tokenizer '$TEKKEN' --decode"

# --chat
chat_case() {  # name expected-text jsonl-line
    printf '{"messages": [{"role": "user", "content": "fine"}, {"role": "assistant", "content": "ok"}]}\n%s\n' "$3" >"$tmp/chat.jsonl"
    expect_fail "$1" "$tmp/chat.jsonl:2: $2" "$TOKENIZE" --tokenizer "$V3" --chat "$tmp/chat.jsonl"
}
chat_case chat_invalid_json "invalid JSON" '{"messages": [}'
chat_case chat_no_messages 'no "messages" array' '{"text": "pretraining"}'
chat_case chat_unknown_role "messages[0]: unknown role" '{"messages": [{"role": "narrator", "content": "x"}]}'
chat_case chat_content_not_string 'messages[0]: no string "content"' '{"messages": [{"role": "user", "content": 5}]}'
chat_case chat_role_missing 'messages[0]: no string "role"' '{"messages": [{"content": "x"}]}'
chat_case chat_bad_weight 'messages[1]: "weight" is not a number' '{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "weight": "zero"}]}'
chat_case chat_empty_assistant "messages[1]: empty assistant message" '{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": ""}]}'
expect_fail chat_format_unknown "--chat-format 'v9'" "$TOKENIZE" --tokenizer "$V3" --chat "$tmp/chat.jsonl" --chat-format v9
echo '{"messages": [{"role": "user", "content": "q"}]}' >"$tmp/ok.jsonl"
expect_fail chat_format_needs_tokens "needs the special token [INST]" "$TOKENIZE" --tokenizer "$TOKENIZER_DATA/tokenizer.model.v1" --chat "$tmp/ok.jsonl" --chat-format v3
