/*
 * hb-lua: the setjmp/longjmp runtime for LLVM's Emscripten-style SjLj lowering
 * (`-mllvm -enable-emscripten-sjlj`, LLVM 14 contract), written for this project.
 *
 * How it fits together:
 *  - In a function that calls setjmp, LLVM keeps a table of (setjmp id, label) pairs,
 *    malloc'ed on entry with room for 4 pairs and a terminator; each setjmp becomes
 *    `table = saveSetjmp(env, label, table, size); size = getTempRet0();`.
 *  - Calls from such a function that may longjmp go through the host import
 *    `env.invoke_<sig>(fn, args...)`. The host calls the function; if it unwinds
 *    with a longjmp, the host restores the stack pointer and returns normally.
 *  - After each invoke the code reads __THREW__/__threwValue; when set, it asks
 *    testSetjmp whether the jmp_buf belongs to one of its own setjmps (label != 0)
 *    and jumps there, or re-throws with emscripten_longjmp.
 *  - longjmp(env, val) becomes emscripten_longjmp(env, val): record the target in
 *    __THREW__/__threwValue and ask the host to unwind (env._emscripten_throw_longjmp).
 */
#include <stdint.h>
#include <stdlib.h>

/* Data symbols the lowered code reads and clears after every invoke. */
uintptr_t __THREW__ = 0;
int __threwValue = 0;

static int temp_ret0;
static uint32_t next_setjmp_id;

__attribute__((import_module("env"), import_name("_emscripten_throw_longjmp")))
_Noreturn void emscripten_throw_longjmp(void);

void setTempRet0(int value) { temp_ret0 = value; }
int getTempRet0(void) { return temp_ret0; }

/* Records the first pending longjmp only (a second one while unwinding is ignored). */
void setThrew(uintptr_t threw, int value) {
  if (__THREW__ == 0) {
    __THREW__ = threw;
    __threwValue = value;
  }
}

/* table: pairs (id, label), terminated by id 0; size: capacity in pairs. */
uint32_t *saveSetjmp(uint32_t *env, uint32_t label, uint32_t *table, uint32_t size) {
  uint32_t id = ++next_setjmp_id;
  if (id == 0) id = next_setjmp_id = 1; /* 0 terminates the table */
  env[0] = id;
  for (uint32_t i = 0; i < size; i++) {
    if (table[2 * i] == 0) {
      table[2 * i] = id;
      table[2 * i + 1] = label;
      table[2 * i + 2] = 0; /* room for it: the table holds size + 1 pairs */
      setTempRet0((int)size);
      return table;
    }
  }
  /* Full: double the capacity (size + 1 pairs, counting the terminator). */
  uint32_t new_size = size * 2;
  uint32_t *grown = realloc(table, 2 * sizeof(uint32_t) * (new_size + 1));
  if (grown == NULL) __builtin_trap();
  grown[2 * size] = id;
  grown[2 * size + 1] = label;
  grown[2 * size + 2] = 0;
  setTempRet0((int)new_size);
  return grown;
}

uint32_t testSetjmp(uint32_t id, const uint32_t *table, uint32_t size) {
  for (uint32_t i = 0; i < size; i++) {
    uint32_t cur = table[2 * i];
    if (cur == 0) break;
    if (cur == id) return table[2 * i + 1];
  }
  return 0;
}

_Noreturn void emscripten_longjmp(uintptr_t env, int value) {
  setThrew(env, value != 0 ? value : 1);
  emscripten_throw_longjmp();
}
