/* test_dtype.c - f16/bf16 conversion against IEEE reference values, dtype sizes. */
#include "lt_test.h"

int main(void) {
    /* f16 known encodings (IEEE 754 binary16) */
    CHECK(lt_f32_to_f16(1.0f) == 0x3c00, "1.0");
    CHECK(lt_f32_to_f16(-2.0f) == 0xc000, "-2.0");
    CHECK(lt_f32_to_f16(65504.0f) == 0x7bff, "max");
    CHECK(lt_f32_to_f16(65520.0f) == 0x7c00, "65520 rounds to inf");
    CHECK(lt_f32_to_f16(5.9604644775390625e-08f) == 0x0001, "min subnormal");
    CHECK(lt_f32_to_f16(2.98023223876953125e-08f) == 0x0000, "half of min subnormal ties to even 0");
    CHECK(lt_f32_to_f16(1.0f + 1.0f / 2048) == 0x3c00, "tie to even down");
    CHECK(lt_f32_to_f16(1.0f + 3.0f / 2048) == 0x3c02, "tie to even up");
    CHECK(lt_f16_to_f32(0x0001) == 5.9604644775390625e-08f, "subnormal decode");
    CHECK(lt_f16_to_f32(0x3555) == 0.333251953125f, "1/3 decode");
    CHECK(isinf(lt_f16_to_f32(0x7c00)), "inf");
    CHECK(isnan(lt_f16_to_f32(0x7e00)), "nan");
    /* every finite f16 round-trips exactly */
    int bad = 0;
    for (uint32_t h = 0; h < 0x10000; h++) {
        if ((h & 0x7c00) == 0x7c00) continue;
        if (lt_f32_to_f16(lt_f16_to_f32((uint16_t)h)) != h) bad++;
    }
    CHECK(bad == 0, "%d f16 values do not round-trip", bad);
    /* bf16 */
    CHECK(lt_f32_to_bf16(1.0f) == 0x3f80, "bf16 1.0");
    CHECK(lt_f32_to_bf16(1.00390625f) == 0x3f80, "bf16 tie to even down");
    CHECK(lt_f32_to_bf16(1.01171875f) == 0x3f82, "bf16 tie to even up");
    CHECK(isnan(lt_bf16_to_f32(lt_f32_to_bf16(NAN))), "bf16 nan");
    /* sizes */
    CHECK(lt_dtype_nbytes(LT_DTYPE_Q4_K, 512) == 288, "q4_k");
    CHECK(lt_dtype_nbytes(LT_DTYPE_Q8_0, 33) == -1, "misfit");
    CHECK(lt_dtype_nbytes(LT_DTYPE_F32, INT64_MAX / 2) == -1, "overflow");
    lt_dtype d;
    CHECK(lt_dtype_from_name("BF16", &d) == 0 && d == LT_DTYPE_BF16, "name");
    CHECK(lt_dtype_from_name("F8_E4M3", &d) == -1, "unknown");
    LT_TEST_END();
}
