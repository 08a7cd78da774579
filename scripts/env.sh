# Sourced by the other scripts: installs what a fresh machine lacks and
# points cargo at a build cache outside the checkout, so RocksDB's C++ is
# compiled once per machine, not once per checkout.
set -euo pipefail

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/twopc-target}"
mkdir -p "$CARGO_TARGET_DIR"

# RocksDB's Rust bindings are generated with bindgen, which needs libclang
# itself (libclang.so or libclang-N.so): libclang-cpp, which some machines
# have without it, does not do.
has_libclang() {
    ls /usr/lib/llvm-*/lib/libclang.so* /usr/lib/llvm-*/lib/libclang-[0-9]*.so* >/dev/null 2>&1 ||
        ldconfig -p 2>/dev/null | grep -Eq '[[:space:]]libclang(-[0-9.]+)?\.so'
}
if ! has_libclang; then
    echo "twopc: installing libclang-dev (needed to build RocksDB's bindings)..." >&2
    if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq libclang-dev clang >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
    echo "twopc: cargo not found; install Rust from your distribution or rustup first" >&2
    exit 3
fi

if [ ! -e "$CARGO_TARGET_DIR/debug/build" ]; then
    echo "twopc: first build on this machine: RocksDB compiles from C++ source (~15 min on 2 cores)" >&2
fi

# Runs a copy of the binary just built ($CARGO_TARGET_DIR/debug/twopc) kept
# at $CARGO_TARGET_DIR/$1/twopc, with the remaining arguments. The plain and
# the fault-point builds both link to debug/twopc; each script runs its own
# copy, so building one cannot swap the binary a running `twopc local` of
# the other restarts its servers from.
exec_own_copy() {
    local copy="$CARGO_TARGET_DIR/$1/twopc"
    shift
    mkdir -p "$(dirname "$copy")"
    if ! cmp -s "$CARGO_TARGET_DIR/debug/twopc" "$copy"; then
        # A rename, not an overwrite: a running copy keeps its file.
        cp "$CARGO_TARGET_DIR/debug/twopc" "$copy.new.$$"
        mv -f "$copy.new.$$" "$copy"
    fi
    exec "$copy" "$@"
}
