#pragma once
#include <cblas.h>
#include <lapacke.h>

/* Data prefetch into all cache levels, for Swift kernels (Swift cannot emit prefetch
   instructions). The AQLM decode kernel streams its codes ahead of use with it. */
static inline void aqlm_prefetch(const void *address) { __builtin_prefetch(address, 0, 3); }
