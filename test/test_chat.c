// test_chat.c: the instruct chat formats against mistral-common's published golden vectors.
//
// The conversation and the expected ids are mistral-common's test fixtures
// tests/data/samples/no_tools/tokens_v1.json and tokens_v3.json (reference/mistral.md §8;
// V2 gives the same ids as V3 for this conversation), and tests/test_tokenize_v3.py's
// V3-Tekken `[INST]a[/INST]` = [1, 3, 1097, 4]. The loss mask follows mistral-finetune:
// 1 on assistant tokens and their EOS, 0 elsewhere.
#include <stdint.h>

#include "../tokenizer/chat.h"
#include "test.h"

static const char *data_dir;

static int load(Tokenizer *t, const char *file) {
    char path[4096], err[ERR_LEN];
    snprintf(path, sizeof(path), "%s/%s", data_dir, file);
    if (tokenizer_load(t, path, err)) {
        printf("  load %s: %s\n", file, err);
        return -1;
    }
    return 0;
}

#define MSG(role, text) {role, text, sizeof(text) - 1, -1.0}
static const ChatMessage no_tools[] = {
    MSG(ROLE_USER, "What's the result of 5 + 5?"),
    MSG(ROLE_ASSISTANT, "The result of 5 + 5 is 10."),
    MSG(ROLE_USER, "What is the square root of 64?"),
    MSG(ROLE_ASSISTANT, "The square root of 64 is 8, because 8 x 8 equals 64."),
    MSG(ROLE_USER, "Can you multiply the results of the previous two questions?"),
    MSG(ROLE_ASSISTANT, "Sure! The result of 10 x 8 is 80."),
    MSG(ROLE_USER, "Thanks"),
};
#define N_NO_TOOLS (sizeof(no_tools) / sizeof(no_tools[0]))

static const int32_t golden_v1[] = {
    1, 733, 16289, 28793, 1824, 28742, 28713, 272, 1204, 302, 28705, 28782, 648, 28705, 28782,
    28804, 733, 28748, 16289, 28793, 415, 1204, 302, 28705, 28782, 648, 28705, 28782, 349, 28705,
    28740, 28734, 28723, 2, 733, 16289, 28793, 1824, 349, 272, 7930, 5557, 302, 28705, 28784,
    28781, 28804, 733, 28748, 16289, 28793, 415, 7930, 5557, 302, 28705, 28784, 28781, 349, 28705,
    28783, 28725, 1096, 28705, 28783, 1318, 28705, 28783, 21588, 28705, 28784, 28781, 28723, 2,
    733, 16289, 28793, 2418, 368, 17669, 346, 272, 2903, 302, 272, 3454, 989, 4224, 28804, 733,
    28748, 16289, 28793, 12875, 28808, 415, 1204, 302, 28705, 28740, 28734, 1318, 28705, 28783,
    349, 28705, 28783, 28734, 28723, 2, 733, 16289, 28793, 8868, 733, 28748, 16289, 28793};

static const int32_t golden_v3[] = {
    1, 3, 2592, 29510, 29481, 1040, 1972, 1070, 29473, 29550, 1416, 29473, 29550, 29572, 4,
    1183, 1972, 1070, 29473, 29550, 1416, 29473, 29550, 1117, 29473, 29508, 29502, 29491, 2, 3,
    2592, 1117, 1040, 8698, 6325, 1070, 29473, 29552, 29549, 29572, 4, 1183, 8698, 6325, 1070,
    29473, 29552, 29549, 1117, 29473, 29551, 29493, 1864, 29473, 29551, 2086, 29473, 29551,
    22356, 29473, 29552, 29549, 29491, 2, 3, 3186, 1136, 18437, 1114, 1040, 3671, 1070, 1040,
    4222, 1757, 4992, 29572, 4, 13643, 29576, 1183, 1972, 1070, 29473, 29508, 29502, 2086, 29473,
    29551, 1117, 29473, 29551, 29502, 29491, 2, 3, 9636, 4};

// The mask the golden ids imply: the tokens after each "[/INST]" up to and including the
// EOS are the assistant's. For V1 "[/INST]" is the text pieces 733 28748 16289 28793.
static void check_mask(const TokenVec *ids, const ByteBuf *mask, int v1) {
    CHECK_INT(mask->len, ids->len);
    int in_answer = 0;
    for (size_t i = 0; i < ids->len && i < mask->len; i++) {
        if (mask->data[i] != in_answer) {
            printf("  mask[%zu] = %d, want %d\n", i, mask->data[i], in_answer);
            CHECK(0);
            return;
        }
        if (ids->ids[i] == 2) in_answer = 0;
        int end_inst = v1 ? i >= 3 && ids->ids[i] == 28793 && ids->ids[i - 1] == 16289 &&
                                ids->ids[i - 2] == 28748
                          : ids->ids[i] == 4;
        if (end_inst) in_answer = 1;
    }
}

static void check_golden(const char *file, ChatFormat f, const int32_t *want, size_t n, int v1) {
    Tokenizer t;
    if (load(&t, file)) { CHECK(0); return; }
    TokenVec ids = {0};
    ByteBuf mask = {0};
    char err[ERR_LEN];
    CHECK_INT(chat_format_for(&t), f);
    CHECK_INT(chat_encode(&t, f, no_tools, N_NO_TOOLS, &ids, &mask, err), 0);
    CHECK_IDS(ids.ids, ids.len, want, n);
    check_mask(&ids, &mask, v1);
    tokvec_free(&ids);
    bytebuf_free(&mask);
    tokenizer_free(&t);
}

TEST(golden_v1_no_tools) {
    check_golden("tokenizer.model.v1", CHAT_V1, golden_v1, sizeof(golden_v1) / 4, 1);
}
TEST(golden_v2_no_tools) {
    check_golden("mistral_instruct_tokenizer_240216.model.v2", CHAT_V2, golden_v3, sizeof(golden_v3) / 4, 0);
}
TEST(golden_v3_no_tools) {
    check_golden("mistral_instruct_tokenizer_240323.model.v3", CHAT_V3, golden_v3, sizeof(golden_v3) / 4, 0);
}

TEST(golden_v3_tekken) {
    Tokenizer t;
    if (load(&t, "tekken_240718.json")) { CHECK(0); return; }
    ChatMessage m[] = {MSG(ROLE_USER, "a")};
    TokenVec ids = {0};
    ByteBuf mask = {0};
    char err[ERR_LEN];
    CHECK_INT(chat_format_for(&t), CHAT_V3);
    CHECK_INT(chat_encode(&t, CHAT_V3, m, 1, &ids, &mask, err), 0);
    static const int32_t want[] = {1, 3, 1097, 4};
    CHECK_IDS(ids.ids, ids.len, want, 4);
    tokvec_free(&ids);
    bytebuf_free(&mask);
    tokenizer_free(&t);
}

TEST(errors) {
    Tokenizer t;
    if (load(&t, "tokenizer.model.v1")) { CHECK(0); return; }
    TokenVec ids = {0};
    ByteBuf mask = {0};
    char err[ERR_LEN];
    ChatMessage m[] = {MSG(ROLE_USER, "hi"), MSG(ROLE_ASSISTANT, "")};
    // the v1 vocabulary has no [INST] control token, so V3 cannot be written with it
    CHECK_INT(chat_encode(&t, CHAT_V3, m, 1, &ids, &mask, err), -1);
    CHECK_CONTAINS(err, "needs the special token [INST]");
    // mistral-common refuses an empty assistant message
    CHECK_INT(chat_encode(&t, CHAT_V1, m, 2, &ids, &mask, err), -1);
    CHECK_CONTAINS(err, "messages[1]: empty assistant message");
    CHECK_INT(ids.len, 0);  // nothing half-written
    CHECK_INT(mask.len, 0);
    ChatFormat f;
    CHECK_INT(chat_format_parse("v7", &f), 0);
    CHECK_INT(f, CHAT_V7);
    CHECK_INT(chat_format_parse("V1", &f), 0);
    CHECK_INT(f, CHAT_V1);
    CHECK_INT(chat_format_parse("v5", &f), -1);
    CHECK_INT(chat_format_parse("v77", &f), -1);
    tokvec_free(&ids);
    bytebuf_free(&mask);
    tokenizer_free(&t);
}

int main(int argc, char **argv) {
    data_dir = test_tokenizer_dir(argc, argv);
    RUN(golden_v1_no_tools);
    RUN(golden_v2_no_tools);
    RUN(golden_v3_no_tools);
    RUN(golden_v3_tekken);
    RUN(errors);
    return test_summary();
}
