# Shared by the bench scripts (sourced, after `root` is set to the repository and the
# working directory is it): messages, and where cargo puts what it builds.

log() { printf '%s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# need TOOL...: dies unless every TOOL is on the PATH.
need() {
    local tool
    for tool in "$@"; do
        command -v "$tool" >/dev/null 2>&1 || die "$tool is needed"
    done
}

# aos_module: the absolute path of the aos module the benchmarks run ($AOS_WASM, else
# aos-2-pure-xs.wasm in ../shared/fixtures beside the repository); dies if missing.
aos_module() {
    local wasm="${AOS_WASM:-$root/../shared/fixtures/aos-2-pure-xs.wasm}"
    [[ -f "$wasm" ]] || die "missing module $wasm (set AOS_WASM)"
    printf '%s\n' "$(cd "$(dirname "$wasm")" && pwd)/$(basename "$wasm")"
}

# cargo_target_dir: the workspace's target directory (CARGO_TARGET_DIR and cargo's
# configuration honoured), else $root/target.
cargo_target_dir() {
    local dir
    dir="$(cargo metadata --format-version 1 --no-deps |
        sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
    printf '%s\n' "${dir:-$root/target}"
}

# load: the load average (1, 5, 15 minutes).
load() { cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || uptime; }

# median: the median of the numbers on stdin, one a line.
median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# criterion_median DIR NAME: the median time, in nanoseconds, criterion recorded for
# benchmark NAME under DIR (target/criterion/<group>).
criterion_median() {
    local f="$1/$2/new/estimates.json"
    [[ -f "$f" ]] || die "no criterion result $f"
    sed -n 's/.*"median":{"confidence_interval":{[^}]*},"point_estimate":\([0-9.eE+-]*\).*/\1/p' "$f"
}
