// test_cuda_types_nvidia.cpp: NVIDIA's own host-side conversions and arithmetic from the
// CUDA toolkit's cuda_bf16.h / cuda_fp16.h, the reference test_cuda_types.cpp compares the
// harness's 16-bit float types with. Compiled against the toolkit's headers (not the
// harness's), and with -fno-weak like the harness tests, so that the two different
// definitions of __nv_bfloat16 and __half each stay inside their own translation unit;
// only bit patterns cross between them. Without the toolkit (NO_CUDA_TOOLKIT) there is no
// reference, and the test says so.
#include "test_cuda_types_nvidia.h"

#ifdef NO_CUDA_TOOLKIT
bool nvidia_reference_available() { return false; }
unsigned short nvidia_float2bfloat16(float) { return 0; }
unsigned short nvidia_double2bfloat16(double) { return 0; }
float nvidia_bfloat162float(unsigned short) { return 0; }
unsigned short nvidia_float2half(float) { return 0; }
float nvidia_half2float(unsigned short) { return 0; }
unsigned short nvidia_double2half(double) { return 0; }
unsigned short nvidia_bf16_op(char, unsigned short, unsigned short) { return 0; }
unsigned short nvidia_half_op(char, unsigned short, unsigned short) { return 0; }
#else
#include <cuda_bf16.h>
#include <cuda_fp16.h>

static unsigned short bits(__nv_bfloat16 h) { return __bfloat16_as_ushort(h); }
static unsigned short bits(__half h) { return __half_as_ushort(h); }
static __nv_bfloat16 bf16(unsigned short u) { return __ushort_as_bfloat16(u); }
static __half fp16(unsigned short u) { return __ushort_as_half(u); }

bool nvidia_reference_available() { return true; }
unsigned short nvidia_float2bfloat16(float f) { return bits(__float2bfloat16(f)); }
unsigned short nvidia_double2bfloat16(double d) { return bits(__double2bfloat16(d)); }
float nvidia_bfloat162float(unsigned short h) { return __bfloat162float(bf16(h)); }
unsigned short nvidia_float2half(float f) { return bits(__float2half(f)); }
float nvidia_half2float(unsigned short h) { return __half2float(fp16(h)); }
unsigned short nvidia_double2half(double d) { return bits(__double2half(d)); }
unsigned short nvidia_bf16_op(char op, unsigned short a, unsigned short b) {
    switch (op) {
        case '+': return bits(__hadd(bf16(a), bf16(b)));
        case '-': return bits(__hsub(bf16(a), bf16(b)));
        case '*': return bits(__hmul(bf16(a), bf16(b)));
        default: return bits(__hdiv(bf16(a), bf16(b)));
    }
}
unsigned short nvidia_half_op(char op, unsigned short a, unsigned short b) {
    switch (op) {
        case '+': return bits(__hadd(fp16(a), fp16(b)));
        case '-': return bits(__hsub(fp16(a), fp16(b)));
        case '*': return bits(__hmul(fp16(a), fp16(b)));
        default: return bits(__hdiv(fp16(a), fp16(b)));
    }
}
#endif
