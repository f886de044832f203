/*
 * hb-lua: a minimal <setjmp.h> for wasm32-wasi (Debian's wasi-libc has none).
 *
 * Lua's ldo.c is compiled with `-mllvm -enable-emscripten-sjlj`: LLVM rewrites every
 * setjmp/longjmp into calls of the runtime in sjlj.c plus the host's `env.invoke_*`
 * trampolines, so these declarations are never called directly. A jmp_buf only needs
 * room for the identifier that saveSetjmp stores in its first word.
 */
#ifndef HB_LUA_SETJMP_H
#define HB_LUA_SETJMP_H

typedef unsigned long jmp_buf[4];

int setjmp(jmp_buf env);
_Noreturn void longjmp(jmp_buf env, int val);

#endif
