// test_cuda_types_nvidia.h: what test_cuda_types_nvidia.cpp (compiled against the CUDA
// toolkit's headers) offers test_cuda_types.cpp (compiled against the harness's): NVIDIA's
// conversions and arithmetic on bit patterns only, so the two definitions of __nv_bfloat16
// and __half never meet. nvidia_reference_available() is false without the toolkit.
#ifndef TEST_CUDA_TYPES_NVIDIA_H
#define TEST_CUDA_TYPES_NVIDIA_H

bool nvidia_reference_available();
unsigned short nvidia_float2bfloat16(float f);
unsigned short nvidia_double2bfloat16(double d);
float nvidia_bfloat162float(unsigned short h);
unsigned short nvidia_float2half(float f);
float nvidia_half2float(unsigned short h);
unsigned short nvidia_double2half(double d);
unsigned short nvidia_bf16_op(char op, unsigned short a, unsigned short b);
unsigned short nvidia_half_op(char op, unsigned short a, unsigned short b);

#endif
