/* Branch-free ReLU mask for the BatchNorm kernels (_batchnorm.pyx): g where out > 0, else +0.
 *
 * ReLU masks are ~50% random, so a branch on them is mispredicted about every other element
 * (it made the fused BatchNorm-ReLU backward 8x slower than the plain one).  Here the test
 * becomes an all-ones/all-zeros bit mask ANDed with g's bits: exact for every g (inf and NaN
 * included, which g·(out > 0) would not be) and out (NaN out masks, as in numpy's x > 0).
 */
#ifndef ADDERCORE_RELU_MASK_H
#define ADDERCORE_RELU_MASK_H

#include <stdint.h>
#include <string.h>

static inline double addercore_masked_f32(float g, float out)
{
    uint32_t bits;
    memcpy(&bits, &g, sizeof bits);
    bits &= (uint32_t)0 - (uint32_t)(out > 0);
    float kept;
    memcpy(&kept, &bits, sizeof kept);
    return kept;
}

static inline double addercore_masked_f64(double g, double out)
{
    uint64_t bits;
    memcpy(&bits, &g, sizeof bits);
    bits &= (uint64_t)0 - (uint64_t)(out > 0);
    double kept;
    memcpy(&kept, &bits, sizeof kept);
    return kept;
}

#endif
