/*
 * engine.c -- the CPU engine as one translation unit: every file of this folder, so that the
 * kernels' helpers inline across files and only the functions of amsim_gemm.h and
 * engine_internal.h are exported from the shared library (engine.h says more).
 */
#include "engine.h"

#include "work.c"
#include "pool.c"
#include "split.c"
#include "lut_prep.c"
#include "expand.c"
#include "lookup.c"
#include "portable.c"
#include "direct.c"
#include "planner.c"
#include "gemm.c"
#include "model.c"
#include "conv.c"
#include "depthwise.c"
#include "int_gemm.c"
#include "quantize.c"
