//! Builds the Lua engine module: Lua 5.3.6 (from the `lua-src` crate) plus the glue in
//! `c/`, compiled with Debian's clang-14 for wasm32-wasi into `$OUT_DIR/lua.wasm`.
//!
//! The flags are fixed and no absolute path reaches the output (`-ffile-prefix-map`,
//! no debug info), so the module is byte-for-byte reproducible; `src/lib.rs` pins its
//! sha256 in a test. Overrides: `HB_LUA_CLANG` (the compiler), `HB_LUA_SRC_DIR` (a
//! directory holding Lua 5.3.6's `lapi.c`, …).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::{env, fs, thread};

/// The `lua-src` release whose `lua-5.3.6/` directory is compiled (pinned with `=` in
/// Cargo.toml).
const LUA_SRC_VERSION: &str = "551.1.0";

/// Debian packages that provide the toolchain.
const APT_HINT: &str = "apt-get install -y clang-14 lld-14 wasi-libc libclang-rt-14-dev-wasm32";

/// Lua's library sources that are not compiled: the stand-alone interpreter and
/// compiler, `linit.c` (the glue opens the libraries itself) and `liolib.c` (no files).
const LUA_SKIP: &[&str] = &["lua.c", "luac.c", "linit.c", "liolib.c"];

fn main() {
    if let Err(e) = run() {
        eprintln!("\nhb-lua build failed: {e}\n");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").map_err(|e| e.to_string())?);
    let out = PathBuf::from(env::var("OUT_DIR").map_err(|e| e.to_string())?);
    let glue_dir = manifest.join("c");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=c");
    println!("cargo:rerun-if-env-changed=HB_LUA_CLANG");
    println!("cargo:rerun-if-env-changed=HB_LUA_SRC_DIR");

    let clang = env::var("HB_LUA_CLANG").unwrap_or_else(|_| "clang-14".into());
    check_clang(&clang)?;
    let lua_dir = find_lua_sources()?;

    // Translation units, in a fixed order (the link order is part of the output).
    let mut units: Vec<(PathBuf, bool)> = Vec::new();
    let mut lua_files: Vec<PathBuf> = fs::read_dir(&lua_dir)
        .map_err(|e| format!("cannot list {}: {e}", lua_dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "c"))
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            !LUA_SKIP.contains(&name)
        })
        .collect();
    lua_files.sort();
    units.extend(lua_files.into_iter().map(|p| (p, true)));
    units.push((glue_dir.join("glue.c"), false));
    units.push((glue_dir.join("sjlj.c"), false));

    let obj_dir = out.join("obj");
    fs::create_dir_all(&obj_dir).map_err(|e| e.to_string())?;
    let lua_map = format!("-ffile-prefix-map={}=lua-5.3.6", lua_dir.display());
    let glue_map = format!("-ffile-prefix-map={}=hb-lua/c", glue_dir.display());
    let include = glue_dir.join("include");

    let jobs: Vec<(PathBuf, PathBuf, bool)> = units
        .iter()
        .map(|(src, is_lua)| {
            let stem = src.file_stem().and_then(|s| s.to_str()).unwrap_or("x");
            (src.clone(), obj_dir.join(format!("{stem}.o")), *is_lua)
        })
        .collect();
    let queue = Mutex::new(jobs.clone().into_iter());
    let errors = Mutex::new(Vec::<String>::new());
    let workers = env::var("NUM_JOBS")
        .ok()
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(2)
        .clamp(1, 4);
    thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                loop {
                    let next = queue.lock().map(|mut q| q.next()).unwrap_or(None);
                    let Some((src, obj, is_lua)) = next else {
                        break;
                    };
                    let mut cmd = Command::new(&clang);
                    cmd.args(["--target=wasm32-wasi", "-O2", "-std=gnu11"])
                        .args(["-DLUA_COMPAT_5_2", "-mmutable-globals"])
                        .args(["-mllvm", "-enable-emscripten-sjlj"])
                        .arg(&lua_map)
                        .arg(&glue_map)
                        .arg("-I")
                        .arg(&include)
                        .arg("-I")
                        .arg(&lua_dir)
                        .args(["-include", "hb_config.h"]);
                    if is_lua {
                        cmd.arg("-w");
                    } else {
                        cmd.args(["-Wall", "-Wextra"]);
                    }
                    cmd.arg("-c").arg(&src).arg("-o").arg(&obj);
                    if let (Err(e), Ok(mut errs)) = (run_tool(&mut cmd), errors.lock()) {
                        errs.push(format!("compiling {}: {e}", src.display()));
                    }
                }
            });
        }
    });
    let errors = errors.into_inner().unwrap_or_default();
    if !errors.is_empty() {
        return Err(format!(
            "{}\n(the wasm32-wasi toolchain is Debian's: {APT_HINT})",
            errors.join("\n")
        ));
    }

    let wasm = out.join("lua.wasm");
    let mut link = Command::new(&clang);
    link.args(["--target=wasm32-wasi", "-O2", "-mexec-model=reactor"])
        .args(["-Wl,--export-table", "-Wl,--export=__stack_pointer"])
        .args(["-Wl,--stack-first", "-Wl,-z,stack-size=1048576"])
        .arg(format!(
            "-Wl,--allow-undefined-file={}",
            glue_dir.join("imports.txt").display()
        ));
    for (_, obj, _) in &jobs {
        link.arg(obj);
    }
    link.arg("-o").arg(&wasm);
    run_tool(&mut link).map_err(|e| format!("linking lua.wasm: {e}\n({APT_HINT})"))?;
    Ok(())
}

fn check_clang(clang: &str) -> Result<(), String> {
    let missing = || {
        format!(
            "`{clang}` was not found. hb-lua compiles Lua 5.3 to wasm32-wasi with Debian's \
             clang-14 and wasi-libc; install them with:\n    {APT_HINT}\n(or point \
             HB_LUA_CLANG at a clang-14 that targets wasm32-wasi)"
        )
    };
    match Command::new(clang).arg("--version").output() {
        Ok(o) if o.status.success() => {}
        _ => return Err(missing()),
    }
    // wasi-libc and the wasm32 compiler-rt: clang finds them without --sysroot.
    for f in [
        "/usr/lib/wasm32-wasi/libc.a",
        "/usr/include/wasm32-wasi/stdlib.h",
    ] {
        if env::var_os("HB_LUA_CLANG").is_none() && !Path::new(f).exists() {
            return Err(format!(
                "{f} is missing (wasi-libc). Install with:\n    {APT_HINT}"
            ));
        }
    }
    Ok(())
}

/// Lua 5.3.6's sources: `HB_LUA_SRC_DIR`, else `lua-src-<version>/lua-5.3.6` in the
/// cargo registry (the `lua-src` build-dependency puts it there).
fn find_lua_sources() -> Result<PathBuf, String> {
    if let Some(dir) = env::var_os("HB_LUA_SRC_DIR") {
        let dir = PathBuf::from(dir);
        return check_lua_dir(dir);
    }
    let cargo_home = env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .ok_or("neither CARGO_HOME nor HOME is set")?;
    let registry = cargo_home.join("registry").join("src");
    let mut candidates: Vec<PathBuf> = fs::read_dir(&registry)
        .map_err(|e| format!("cannot list {}: {e}", registry.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .map(|index| {
            index
                .join(format!("lua-src-{LUA_SRC_VERSION}"))
                .join("lua-5.3.6")
        })
        .filter(|p| p.join("lapi.c").is_file())
        .collect();
    candidates.sort();
    match candidates.into_iter().next() {
        Some(dir) => check_lua_dir(dir),
        None => Err(format!(
            "Lua 5.3.6 sources not found under {}/*/lua-src-{LUA_SRC_VERSION}/ \
             (the lua-src build-dependency; run `cargo fetch`), and HB_LUA_SRC_DIR is not set",
            registry.display()
        )),
    }
}

fn check_lua_dir(dir: PathBuf) -> Result<PathBuf, String> {
    let lua_h = fs::read_to_string(dir.join("lua.h"))
        .map_err(|e| format!("{}: {e}", dir.join("lua.h").display()))?;
    if !lua_h.contains("#define LUA_VERSION_RELEASE\t\"6\"")
        || !lua_h.contains("#define LUA_VERSION_MINOR\t\"3\"")
    {
        return Err(format!("{} is not Lua 5.3.6", dir.display()));
    }
    Ok(dir)
}

fn run_tool(cmd: &mut Command) -> Result<(), String> {
    let output = cmd
        .output()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    for line in stderr.lines().filter(|l| !l.trim().is_empty()) {
        println!("cargo:warning={line}");
    }
    if output.status.success() {
        Ok(())
    } else {
        Err(format!("{cmd:?} failed ({}):\n{stderr}", output.status))
    }
}
