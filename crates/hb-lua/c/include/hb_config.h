/*
 * hb-lua: force-included (-include) into every translation unit, Lua's and ours.
 * Each definition removes one source of nondeterminism or one WASI incompatibility.
 */
#ifndef HB_LUA_CONFIG_H
#define HB_LUA_CONFIG_H

/* lstate.h includes <signal.h> for sig_atomic_t; wasi-libc #errors on it. */
#define l_signalT int

/*
 * The string-hash seed. Lua 5.3.6 mixes this value with four addresses (a heap
 * block, a stack slot, a global, a function); inside wasm all four are fixed by the
 * module and the allocation history, so with a constant here the seed, and
 * therefore the iteration order of `pairs`, is the same on every node and run.
 */
#define luai_makeseed() ((unsigned int)0x68622d6cu)

/*
 * table.sort randomises its pivot after a bad partition; lua-src's WASI patch uses
 * arc4random() (WASI random_get). A constant keeps sort (with non-strict comparators
 * or equal elements) reproducible and removes the random_get import.
 */
#define l_randomizePivot() (~0u)

#endif
