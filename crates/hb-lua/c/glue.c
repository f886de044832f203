/*
 * hb-lua glue: the narrow ABI between the Rust host and Lua 5.3 inside wasm32.
 * Written for this project; see crates/hb-lua/src/lib.rs for the host side and
 * docs/adr/0005-lua-on-wasm.md for the design.
 *
 * Exports (all pointers are wasm32 addresses, all integers little-endian):
 *
 *   hb_init() -> i32                  create the Lua state (0 = ok). Once, after _initialize.
 *   hb_input(size) -> ptr             a glue-owned buffer of at least `size` bytes for the
 *                                     next request (0 when out of memory).
 *   hb_load(len) -> result*           request: [u32 nlen][chunk name][source]; runs the chunk
 *   hb_call(len) -> result*           request: [u32 nlen][global name][value list]
 *   hb_eval(len) -> result*           request: [source]; tries "return <source>" first
 *   hb_seed(u32)                      srand(): the state of math.random
 *   hb_gc_kb() -> i32                 Lua heap size in KiB
 *   hb_alloc(size) -> ptr / hb_free(ptr)   plain malloc/free for the host
 *
 * A result is a pointer to three u32s {status, ptr, len}; the payload stays valid until
 * the next request. Status: 0 ok (payload: value list of the results), 1 runtime error
 * (payload: value list [error value, traceback string]), 2 syntax error, 3 out of memory,
 * 4 error in the error handler, 5 bad request (payloads: value list [message]).
 *
 * Value encoding (one tag byte, then):
 *   0 nil | 1 false | 2 true | 3 integer: i64 | 4 float: f64 bits
 *   5 string: u32 len, bytes | 6 table: u32 n, then n (key, value) pairs
 *   7 opaque (function, userdata, thread; only from Lua): u32 len, type name
 * A value list is u32 n, then n values. Tables nest at most HB_MAX_DEPTH deep (a cyclic
 * table fails with "table nesting too deep").
 *
 * Imports (module "hb"):
 *   host_call(ptr, len) -> i32        the encoded argument list of _hb.call(...); returns the
 *                                     length of the reply, fetched with host_result(dst):
 *                                     [u8 0][value list] or [u8 1][error message]
 *   host_result(dst)
 *   output(ptr, len) -> i32           text printed by print / io.write (nonzero: limit hit)
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <wasi/api.h>

#include "lua.h"
#include "lauxlib.h"
#include "lualib.h"

#define HB_MAX_DEPTH 100

enum {
  HB_OK = 0,
  HB_ERRRUN = 1,
  HB_ERRSYNTAX = 2,
  HB_ERRMEM = 3,
  HB_ERRERR = 4,
  HB_ERRREQUEST = 5,
};

enum {
  T_NIL = 0,
  T_FALSE = 1,
  T_TRUE = 2,
  T_INT = 3,
  T_FLOAT = 4,
  T_STRING = 5,
  T_TABLE = 6,
  T_OPAQUE = 7,
};

#define HB_IMPORT(name) __attribute__((import_module("hb"), import_name(name)))
#define HB_EXPORT(name) __attribute__((export_name(name)))

HB_IMPORT("host_call") int32_t hb_host_call(const uint8_t *ptr, uint32_t len);
HB_IMPORT("host_result") void hb_host_result(uint8_t *dst);
HB_IMPORT("output") int32_t hb_output(const uint8_t *ptr, uint32_t len);

static lua_State *L0;

uint8_t *hb_input(uint32_t size);

/* ---------------------------------------------------------------- buffers */

typedef struct {
  uint8_t *data;
  size_t len, cap;
  int oom; /* a growth failed: the encoder raises "not enough memory" */
} Buf;

static int buf_reserve(Buf *b, size_t extra) {
  if (b->oom) return 0;
  if (b->cap - b->len >= extra) return 1;
  size_t cap = b->cap ? b->cap : 256;
  while (cap - b->len < extra) {
    if (cap > ((size_t)-1) / 2) { b->oom = 1; return 0; }
    cap *= 2;
  }
  uint8_t *p = realloc(b->data, cap);
  if (p == NULL) { b->oom = 1; return 0; }
  b->data = p;
  b->cap = cap;
  return 1;
}

static void buf_put(Buf *b, const void *src, size_t n) {
  if (!buf_reserve(b, n)) return;
  memcpy(b->data + b->len, src, n);
  b->len += n;
}

static void buf_u8(Buf *b, uint8_t v) { buf_put(b, &v, 1); }
static void buf_u32(Buf *b, uint32_t v) { buf_put(b, &v, 4); }

static void buf_free(Buf *b) {
  free(b->data);
  b->data = NULL;
  b->len = b->cap = 0;
  b->oom = 0;
}

/* Empties a buffer for reuse; a large one is freed so that it does not linger. */
static void buf_reset(Buf *b) {
  if (b->cap > 65536) {
    buf_free(b);
  } else {
    b->len = 0;
    b->oom = 0;
  }
}

/* The request buffer (hb_input) and the last result's payload. */
static Buf input;
static Buf output;
static uint32_t result[3];

/* ---------------------------------------------------------------- encoding */

static void raise_oom(lua_State *L) {
  lua_pushliteral(L, "not enough memory");
  lua_error(L);
}

static void encode_value(lua_State *L, Buf *b, int idx, int depth);

static void encode_table(lua_State *L, Buf *b, int idx, int depth) {
  if (depth >= HB_MAX_DEPTH) luaL_error(L, "table nesting too deep (a cyclic table?)");
  luaL_checkstack(L, 4, "table nesting too deep");
  idx = lua_absindex(L, idx);
  buf_u8(b, T_TABLE);
  size_t count_at = b->len;
  buf_u32(b, 0);
  uint32_t n = 0;
  lua_pushnil(L);
  while (lua_next(L, idx) != 0) {
    encode_value(L, b, -2, depth + 1);
    encode_value(L, b, -1, depth + 1);
    lua_pop(L, 1);
    n++;
  }
  if (b->oom) raise_oom(L);
  memcpy(b->data + count_at, &n, 4);
}

static void encode_value(lua_State *L, Buf *b, int idx, int depth) {
  switch (lua_type(L, idx)) {
    case LUA_TNIL:
      buf_u8(b, T_NIL);
      break;
    case LUA_TBOOLEAN:
      buf_u8(b, lua_toboolean(L, idx) ? T_TRUE : T_FALSE);
      break;
    case LUA_TNUMBER:
      if (lua_isinteger(L, idx)) {
        int64_t v = (int64_t)lua_tointeger(L, idx);
        buf_u8(b, T_INT);
        buf_put(b, &v, 8);
      } else {
        double v = (double)lua_tonumber(L, idx);
        buf_u8(b, T_FLOAT);
        buf_put(b, &v, 8);
      }
      break;
    case LUA_TSTRING: {
      size_t len;
      const char *s = lua_tolstring(L, idx, &len);
      if (len > UINT32_MAX) luaL_error(L, "string too long to encode");
      buf_u8(b, T_STRING);
      buf_u32(b, (uint32_t)len);
      buf_put(b, s, len);
      break;
    }
    case LUA_TTABLE:
      encode_table(L, b, idx, depth);
      break;
    default: {
      const char *name = luaL_typename(L, idx);
      size_t len = strlen(name);
      buf_u8(b, T_OPAQUE);
      buf_u32(b, (uint32_t)len);
      buf_put(b, name, len);
      break;
    }
  }
  if (b->oom) raise_oom(L);
}

/* Encodes the n values from stack index first on as a value list. */
static void encode_list(lua_State *L, Buf *b, int first, int n) {
  buf_u32(b, (uint32_t)n);
  for (int i = 0; i < n; i++) encode_value(L, b, first + i, 0);
  if (b->oom) raise_oom(L);
}

/* ---------------------------------------------------------------- decoding */

typedef struct {
  const uint8_t *p, *end;
} Reader;

static int rd_u32(Reader *r, uint32_t *v) {
  if (r->end - r->p < 4) return 0;
  memcpy(v, r->p, 4);
  r->p += 4;
  return 1;
}

static void bad_request(lua_State *L, const char *what) {
  luaL_error(L, "malformed value encoding: %s", what);
}

/* Pushes one decoded value. */
static void decode_value(lua_State *L, Reader *r, int depth) {
  if (depth >= HB_MAX_DEPTH) bad_request(L, "nesting too deep");
  luaL_checkstack(L, 4, "value nesting too deep");
  if (r->p >= r->end) bad_request(L, "truncated");
  uint8_t tag = *r->p++;
  switch (tag) {
    case T_NIL: lua_pushnil(L); break;
    case T_FALSE: lua_pushboolean(L, 0); break;
    case T_TRUE: lua_pushboolean(L, 1); break;
    case T_INT: {
      int64_t v;
      if (r->end - r->p < 8) bad_request(L, "truncated integer");
      memcpy(&v, r->p, 8);
      r->p += 8;
      lua_pushinteger(L, (lua_Integer)v);
      break;
    }
    case T_FLOAT: {
      double v;
      if (r->end - r->p < 8) bad_request(L, "truncated float");
      memcpy(&v, r->p, 8);
      r->p += 8;
      lua_pushnumber(L, (lua_Number)v);
      break;
    }
    case T_STRING: {
      uint32_t len;
      if (!rd_u32(r, &len) || (size_t)(r->end - r->p) < len) bad_request(L, "truncated string");
      lua_pushlstring(L, (const char *)r->p, len);
      r->p += len;
      break;
    }
    case T_TABLE: {
      uint32_t n;
      if (!rd_u32(r, &n)) bad_request(L, "truncated table");
      /* Each pair takes at least two bytes: do not trust n for preallocation. */
      if ((size_t)(r->end - r->p) / 2 < n) bad_request(L, "truncated table");
      lua_createtable(L, 0, (int)(n < 1024 ? n : 1024));
      for (uint32_t i = 0; i < n; i++) {
        decode_value(L, r, depth + 1);
        if (lua_isnil(L, -1)) bad_request(L, "nil table key");
        if (lua_type(L, -1) == LUA_TNUMBER && !lua_isinteger(L, -1) &&
            lua_tonumber(L, -1) != lua_tonumber(L, -1))
          bad_request(L, "NaN table key");
        decode_value(L, r, depth + 1);
        lua_rawset(L, -3);
      }
      break;
    }
    default:
      bad_request(L, "unknown tag");
  }
}

/* Pushes a decoded value list; returns its length. */
static int decode_list(lua_State *L, Reader *r) {
  uint32_t n;
  if (!rd_u32(r, &n)) bad_request(L, "truncated list");
  if ((size_t)(r->end - r->p) < n) bad_request(L, "truncated list");
  if (n > 250) bad_request(L, "too many values (at most 250)");
  luaL_checkstack(L, (int)n + 8, "too many values");
  for (uint32_t i = 0; i < n; i++) decode_value(L, r, 0);
  if (r->p != r->end) bad_request(L, "trailing bytes");
  return (int)n;
}

/* ---------------------------------------------------------------- requests */

typedef enum { OP_LOAD, OP_CALL, OP_EVAL } Op;

typedef struct {
  Op op;
  const uint8_t *data;
  size_t len;
  int bad;         /* set when the request itself is malformed */
  int load_status; /* luaL_load's status when compiling the chunk failed */
} Request;

/* Message handler: keeps the error value, records a traceback in the registry. */
static int msgh(lua_State *L) {
  luaL_traceback(L, L, NULL, 1);
  lua_setfield(L, LUA_REGISTRYINDEX, "hb.traceback");
  return 1;
}

static int load_chunk(lua_State *L, const char *src, size_t len, const char *name) {
  return luaL_loadbufferx(L, src, len, name, "t");
}

/* Re-raises a failed load's error, remembering its status (syntax or memory). */
static int load_failed(lua_State *L, Request *req, int status) {
  req->load_status = status;
  return lua_error(L);
}

/* Runs inside lua_pcall; leaves the results on the stack above index 2. */
static int run_request(lua_State *L) {
  Request *req = (Request *)lua_touserdata(L, 1);
  const uint8_t *p = req->data;
  size_t len = req->len;
  int base = lua_gettop(L);
  switch (req->op) {
    case OP_LOAD: {
      uint32_t nlen;
      if (len < 4) { req->bad = 1; bad_request(L, "truncated load request"); }
      memcpy(&nlen, p, 4);
      if (len - 4 < nlen) { req->bad = 1; bad_request(L, "truncated chunk name"); }
      lua_pushlstring(L, (const char *)p + 4, nlen); /* the name, NUL-terminated */
      const char *name = lua_tostring(L, -1);
      int st = load_chunk(L, (const char *)p + 4 + nlen, len - 4 - nlen, name);
      if (st != LUA_OK) return load_failed(L, req, st);
      lua_remove(L, -2);
      lua_call(L, 0, LUA_MULTRET);
      break;
    }
    case OP_EVAL: {
      /* "return <source>" first (an expression), else the source as a statement. */
      luaL_Buffer b;
      luaL_buffinit(L, &b);
      luaL_addstring(&b, "return ");
      luaL_addlstring(&b, (const char *)p, len);
      luaL_pushresult(&b);
      size_t rlen;
      const char *rsrc = lua_tolstring(L, -1, &rlen);
      if (load_chunk(L, rsrc, rlen, "=eval") != LUA_OK) {
        lua_settop(L, base);
        int st = load_chunk(L, (const char *)p, len, "=eval");
        if (st != LUA_OK) return load_failed(L, req, st);
      } else {
        lua_remove(L, -2);
      }
      lua_call(L, 0, LUA_MULTRET);
      break;
    }
    case OP_CALL: {
      uint32_t nlen;
      if (len < 4) { req->bad = 1; bad_request(L, "truncated call request"); }
      memcpy(&nlen, p, 4);
      if (len - 4 < nlen) { req->bad = 1; bad_request(L, "truncated function name"); }
      lua_pushlstring(L, (const char *)p + 4, nlen);
      const char *name = lua_tostring(L, -1);
      int t = lua_getglobal(L, name);
      if (t != LUA_TFUNCTION && !luaL_getmetafield(L, -1, "__call"))
        return luaL_error(L, "global '%s' is not a function (a %s value)", name,
                          lua_typename(L, t));
      if (t != LUA_TFUNCTION) lua_pop(L, 1); /* the __call field */
      lua_remove(L, -2); /* the name */
      Reader r = {p + 4 + nlen, p + len};
      req->bad = 1; /* until the arguments decoded */
      int nargs = decode_list(L, &r);
      req->bad = 0;
      lua_call(L, nargs, LUA_MULTRET);
      break;
    }
  }
  int n = lua_gettop(L) - base;
  buf_reset(&output);
  encode_list(L, &output, base + 1, n);
  return 0;
}

/* Encodes the error at the top of the stack: [error value, traceback]. */
static int encode_error(lua_State *L) {
  buf_reset(&output);
  lua_getfield(L, LUA_REGISTRYINDEX, "hb.traceback");
  if (!lua_isstring(L, -1)) {
    lua_pop(L, 1);
    lua_pushliteral(L, "");
  }
  encode_list(L, &output, 1, 2);
  return 0;
}

static uint32_t *finish(uint32_t status) {
  result[0] = status;
  result[1] = (uint32_t)(uintptr_t)output.data;
  result[2] = (uint32_t)output.len;
  return result;
}

/* A status with a plain message as its payload (when even encoding the error fails). */
static uint32_t *finish_message(uint32_t status, const char *msg) {
  buf_reset(&output);
  size_t n = strlen(msg);
  buf_u32(&output, 1);
  buf_u8(&output, T_STRING);
  buf_u32(&output, (uint32_t)n);
  buf_put(&output, msg, n);
  if (output.oom) buf_reset(&output); /* status alone */
  return finish(status);
}

static uint32_t *request(Op op, uint32_t len) {
  lua_State *L = L0;
  if (L == NULL) return finish_message(HB_ERRREQUEST, "hb_init was not called");
  if (input.data == NULL && hb_input(16) == NULL) return finish_message(HB_ERRMEM, "not enough memory");
  if (len > input.cap) return finish_message(HB_ERRREQUEST, "request longer than its buffer");
  Request req = {op, input.data, len, 0, LUA_OK};
  lua_settop(L, 0);
  lua_pushnil(L);
  lua_setfield(L, LUA_REGISTRYINDEX, "hb.traceback");
  lua_pushcfunction(L, msgh);
  lua_pushcfunction(L, run_request);
  lua_pushlightuserdata(L, &req);
  int st = lua_pcall(L, 1, LUA_MULTRET, 1);
  buf_reset(&input); /* the request was consumed; do not keep a large buffer */
  uint32_t status;
  switch (st) {
    case LUA_OK: status = HB_OK; break;
    case LUA_ERRSYNTAX: status = HB_ERRSYNTAX; break;
    case LUA_ERRMEM: status = HB_ERRMEM; break;
    case LUA_ERRERR: status = HB_ERRERR; break;
    default: status = req.bad ? HB_ERRREQUEST : HB_ERRRUN; break;
  }
  if (req.load_status == LUA_ERRSYNTAX) status = HB_ERRSYNTAX;
  if (req.load_status == LUA_ERRMEM) status = HB_ERRMEM;
  if (output.oom) status = HB_ERRMEM; /* the encoder ran out of memory */
  if (status == HB_OK) {
    lua_settop(L, 0);
    return finish(status);
  }
  /* The stack is [msgh, error]; encode the error value in protected mode too. */
  lua_remove(L, 1);
  lua_pushcfunction(L, encode_error);
  lua_insert(L, 1);
  int est = lua_pcall(L, 1, 0, 0);
  if (est != LUA_OK) {
    lua_settop(L, 0);
    return finish_message(status, status == HB_ERRMEM
                                      ? "not enough memory"
                                      : "error (the error value could not be encoded)");
  }
  lua_settop(L, 0);
  return finish(status);
}

HB_EXPORT("hb_load") uint32_t *hb_load(uint32_t len) { return request(OP_LOAD, len); }
HB_EXPORT("hb_call") uint32_t *hb_call(uint32_t len) { return request(OP_CALL, len); }
HB_EXPORT("hb_eval") uint32_t *hb_eval(uint32_t len) { return request(OP_EVAL, len); }

HB_EXPORT("hb_input") uint8_t *hb_input(uint32_t size) {
  if (size < 16) size = 16;
  if (input.cap < size) {
    buf_free(&input);
    if (!buf_reserve(&input, size)) {
      buf_free(&input);
      return NULL;
    }
  }
  input.len = 0;
  return input.data;
}

HB_EXPORT("hb_alloc") void *hb_alloc(uint32_t size) { return malloc(size ? size : 1); }
HB_EXPORT("hb_free") void hb_free(void *p) { free(p); }
HB_EXPORT("hb_seed") void hb_seed(uint32_t seed) { srand(seed); }
HB_EXPORT("hb_gc_kb") int32_t hb_gc_kb(void) { return L0 ? lua_gc(L0, LUA_GCCOUNT, 0) : 0; }

/* ---------------------------------------------------------------- library */

/* _hb.call(...): the host callback. The arguments are encoded into a static scratch
   buffer (reused, so an encoding error that longjmps out leaks nothing); the reply is
   copied into a userdata that stays on the stack while it is decoded. */
static Buf hostcall;

static int l_host_call(lua_State *L) {
  int n = lua_gettop(L);
  buf_reset(&hostcall);
  encode_list(L, &hostcall, 1, n);
  int32_t rlen = hb_host_call(hostcall.data, (uint32_t)hostcall.len);
  buf_reset(&hostcall);
  if (rlen < 1) return luaL_error(L, "host call failed: empty reply");
  uint8_t *reply = (uint8_t *)lua_newuserdata(L, (size_t)rlen);
  hb_host_result(reply);
  if (reply[0] != 0) {
    lua_pushlstring(L, (const char *)reply + 1, (size_t)rlen - 1);
    return lua_error(L);
  }
  Reader r = {reply + 1, reply + rlen};
  return decode_list(L, &r);
}

static int l_print(lua_State *L) {
  int n = lua_gettop(L);
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  for (int i = 1; i <= n; i++) {
    if (i > 1) luaL_addchar(&b, '\t');
    luaL_tolstring(L, i, NULL); /* pushes the text (uses __tostring / __name) */
    luaL_addvalue(&b);          /* pops it into the buffer */
  }
  luaL_addchar(&b, '\n');
  luaL_pushresult(&b);
  size_t len;
  const char *s = lua_tolstring(L, -1, &len);
  if (hb_output((const uint8_t *)s, (uint32_t)len) != 0) return luaL_error(L, "output limit exceeded");
  return 0;
}

static int l_io_write(lua_State *L) {
  int n = lua_gettop(L);
  for (int i = 1; i <= n; i++) {
    size_t len;
    const char *s = luaL_checklstring(L, i, &len);
    if (hb_output((const uint8_t *)s, (uint32_t)len) != 0)
      return luaL_error(L, "output limit exceeded");
  }
  return 0;
}

/* os.clock(): seconds of the host-set CPU clock (WASI clock PROCESS_CPUTIME_ID). */
static int l_os_clock(lua_State *L) {
  __wasi_timestamp_t t = 0;
  if (__wasi_clock_time_get(__WASI_CLOCKID_PROCESS_CPUTIME_ID, 1, &t) != 0) t = 0;
  lua_pushnumber(L, (lua_Number)t / 1e9);
  return 1;
}

static int l_os_getenv(lua_State *L) {
  luaL_checkstring(L, 1);
  lua_pushnil(L); /* no environment */
  return 1;
}

static int l_unavailable(lua_State *L) {
  return luaL_error(L, "%s is not available in lua@5.3a", lua_tostring(L, lua_upvalueindex(1)));
}

/* load(chunk [, chunkname [, mode [, env]]]) in text mode only: binary chunks can
   corrupt the VM. */
static int l_load_text(lua_State *L) {
  int n = lua_gettop(L);
  if (n < 2) { lua_settop(L, 2); n = 2; }
  lua_pushliteral(L, "t");
  if (n >= 3) lua_replace(L, 3);
  else lua_settop(L, 3);
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
  return lua_gettop(L);
}

static void set_unavailable(lua_State *L, int table, const char *field, const char *shown) {
  lua_pushstring(L, shown);
  lua_pushcclosure(L, l_unavailable, 1);
  lua_setfield(L, table, field);
}

static int open_all(lua_State *L) {
  static const luaL_Reg libs[] = {
      {"_G", luaopen_base},           {LUA_LOADLIBNAME, luaopen_package},
      {LUA_COLIBNAME, luaopen_coroutine}, {LUA_TABLIBNAME, luaopen_table},
      {LUA_OSLIBNAME, luaopen_os},    {LUA_STRLIBNAME, luaopen_string},
      {LUA_MATHLIBNAME, luaopen_math}, {LUA_UTF8LIBNAME, luaopen_utf8},
      {LUA_DBLIBNAME, luaopen_debug}, {LUA_BITLIBNAME, luaopen_bit32},
      {NULL, NULL}};
  for (const luaL_Reg *lib = libs; lib->func; lib++) {
    luaL_requiref(L, lib->name, lib->func, 1);
    lua_pop(L, 1);
  }
  int g = lua_gettop(L) + 1;
  lua_pushglobaltable(L);

  lua_pushcfunction(L, l_print);
  lua_setfield(L, g, "print");
  lua_getfield(L, g, "load");
  lua_pushcclosure(L, l_load_text, 1);
  lua_setfield(L, g, "load");
  set_unavailable(L, g, "dofile", "dofile");
  set_unavailable(L, g, "loadfile", "loadfile");

  /* io: only io.write, to the captured output. */
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, l_io_write);
  lua_setfield(L, -2, "write");
  lua_setfield(L, g, "io");

  /* os: time/date/difftime from the host clock; no process, file or environment. */
  lua_getfield(L, g, "os");
  int os = lua_gettop(L);
  lua_pushcfunction(L, l_os_clock);
  lua_setfield(L, os, "clock");
  lua_pushcfunction(L, l_os_getenv);
  lua_setfield(L, os, "getenv");
  set_unavailable(L, os, "execute", "os.execute");
  set_unavailable(L, os, "exit", "os.exit");
  set_unavailable(L, os, "remove", "os.remove");
  set_unavailable(L, os, "rename", "os.rename");
  set_unavailable(L, os, "tmpname", "os.tmpname");
  lua_pop(L, 1);

  /* package: require finds only package.preload / package.loaded entries. */
  lua_getfield(L, g, "package");
  int pkg = lua_gettop(L);
  set_unavailable(L, pkg, "loadlib", "package.loadlib");
  lua_pushliteral(L, "");
  lua_setfield(L, pkg, "path");
  lua_pushliteral(L, "");
  lua_setfield(L, pkg, "cpath");
  lua_getfield(L, pkg, "searchers");
  lua_rawgeti(L, -1, 1); /* the preload searcher */
  lua_createtable(L, 1, 0);
  lua_insert(L, -2);
  lua_rawseti(L, -2, 1);
  lua_setfield(L, pkg, "searchers");
  lua_pop(L, 2); /* old searchers, package */

  /* _hb: the host interface. */
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, l_host_call);
  lua_setfield(L, -2, "call");
  lua_setfield(L, g, "_hb");

  lua_pop(L, 1);
  return 0;
}

static int panic(lua_State *L) {
  (void)L;
  __builtin_trap(); /* unprotected error: the host sees a trap and rolls back */
}

HB_EXPORT("hb_init") int32_t hb_init(void) {
  if (L0 != NULL) return 0;
  lua_State *L = luaL_newstate();
  if (L == NULL) return 1;
  lua_atpanic(L, panic);
  lua_pushcfunction(L, open_all);
  if (lua_pcall(L, 0, 0, 0) != LUA_OK) {
    lua_close(L);
    return 2;
  }
  L0 = L;
  return 0;
}
