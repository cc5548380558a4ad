// fuzz_safetensors.c: safetensors files (train/safetensors.c): the header and every tensor
// of a file it accepts read in full (st_to_f32 for the float types), so that an accepted
// lie about offsets, shapes or sizes is an out-of-bounds read. Seeds: the small
// *.safetensors fixtures under test/fixtures/.
#include "../../train/safetensors.h"
#include "fuzz.h"

static volatile uint8_t sum;  // every byte read goes somewhere, so that it is read

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char err[ERR_LEN] = "";
    SafeTensors st;
    if (st_open(&st, fuzz_file("model.safetensors", data, size), err)) {
        fuzz_check_message(err);
        return 0;
    }
    for (int i = 0; i < st.n_tensors; i++) {
        const StTensor *t = &st.tensors[i];
        if (st_find(&st, t->name) != t) abort();
        for (size_t b = 0; b < t->nbytes; b++) sum += ((const uint8_t *)t->data)[b];
        if (t->dtype == ST_F32 || t->dtype == ST_BF16 || t->dtype == ST_F16) free(st_to_f32(t));
    }
    st_close(&st);
    return 0;
}
