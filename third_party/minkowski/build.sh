#!/usr/bin/env bash
# Build MinkowskiEngine 0.5.4 from its PyPI sdist with this folder's patches and install it into a venv.
#
#   third_party/minkowski/build.sh [PYTHON] [WORKDIR]      (what `make minkowski` runs)
#
# PYTHON: the venv's interpreter (default .venv/bin/python; its torch is what ME compiles against).
# WORKDIR: where the sdist is cached and unpacked (default build/minkowski).
# Environment: MAX_JOBS (compiler processes, default 2: each takes up to ~1.5 GB), ME_CUDA=1 to build
# the CUDA kernels (needs a CUDA toolkit: nvcc under CUDA_HOME or on PATH); default is a CPU-only build.
#
# The sdist is fetched from PyPI's file host by its pinned URL and checked against its sha256. Not with
# `pip download`: pip prepares an sdist's metadata by running its setup.py, and the unpatched setup.py
# uninstalls MinkowskiEngine through whatever `pip` is first on PATH (patch 03 removes that).
set -euo pipefail

VERSION=0.5.4
SDIST=MinkowskiEngine-$VERSION.tar.gz
URL=https://files.pythonhosted.org/packages/21/5c/c543c4bc5fbe73ac3e38465b3da4f24a61f7a4ac5baec867e582e94aa551/$SDIST
SHA256=b1879c00d0b0b1d30ba622cce239886a7e3c78ee9da1064cdfe2f64c2ab15f94

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PY=$(realpath -s "${1:-.venv/bin/python}")
WORK=$(realpath -m "${2:-build/minkowski}")
CXX=${CXX:-c++}

die() { echo "make minkowski: $*" >&2; exit 1; }

# ------------------------------------------------------------------ can the build start at all?
[ -x "$PY" ] || die "no Python at $PY (run \`make setup\` first)"
TORCH=$("$PY" -c "import torch; print(torch.__version__)" 2>/dev/null) || die "torch is not importable by $PY (run \`make setup\` first)"
missing=()
command -v "$CXX" >/dev/null || missing+=("a C++ compiler ($CXX; Debian: apt-get install g++)")
PY_INCLUDE=$("$PY" -c "import sysconfig; print(sysconfig.get_paths()['include'])")
[ -f "$PY_INCLUDE/Python.h" ] || missing+=("Python headers ($PY_INCLUDE/Python.h; Debian: apt-get install python3-dev)")
if command -v "$CXX" >/dev/null; then
    # The CPU kernels call cblas_sgemm from <cblas.h> and link -lopenblas: try exactly that.
    probe=$(mktemp -d)
    printf '#include <cblas.h>\nint main(){float a=2,b=3,c=0;cblas_sgemm(CblasRowMajor,CblasNoTrans,CblasNoTrans,1,1,1,1.f,&a,1,&b,1,0.f,&c,1);return c!=6;}\n' >"$probe/t.cpp"
    if ! "$CXX" "$probe/t.cpp" -o "$probe/t" -lopenblas >"$probe/log" 2>&1 || ! "$probe/t"; then
        missing+=("libopenblas-dev (cblas.h and libopenblas.so; Debian: apt-get install libopenblas-dev)")
    fi
    rm -rf "$probe"
fi
if [ "${ME_CUDA:-0}" = 1 ]; then
    NVCC=${CUDA_HOME:+$CUDA_HOME/bin/}nvcc
    command -v "$NVCC" >/dev/null || missing+=("a CUDA toolkit (ME_CUDA=1 needs nvcc: set CUDA_HOME or put nvcc on PATH)")
fi
if [ ${#missing[@]} -gt 0 ]; then
    printf 'make minkowski: cannot build MinkowskiEngine, missing:\n' >&2
    printf '  - %s\n' "${missing[@]}" >&2
    exit 1
fi

# ------------------------------------------------------------------ fetch (cached, hash-checked)
mkdir -p "$WORK"
"$PY" - "$URL" "$WORK/$SDIST" "$SHA256" <<'EOF'
import hashlib, os, sys, urllib.request
url, dest, want = sys.argv[1:]
def digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()
if os.path.exists(dest) and digest(dest) == want:
    sys.exit(0)
print(f"fetching {url.rsplit('/', 1)[1]} from PyPI", flush=True)
with urllib.request.urlopen(url, timeout=120) as r, open(dest + ".part", "wb") as f:
    f.write(r.read())
got = digest(dest + ".part")
if got != want:
    os.unlink(dest + ".part")
    sys.exit(f"make minkowski: {url} has sha256 {got}, expected {want}; not building from it")
os.replace(dest + ".part", dest)
EOF

# ------------------------------------------------------------------ unpack fresh, patch
SRC=$WORK/MinkowskiEngine-$VERSION
rm -rf "$SRC"
tar -xzf "$WORK/$SDIST" -C "$WORK"
for p in "$HERE"/patches/*.patch; do
    patch -d "$SRC" -p1 --forward --batch --no-backup-if-mismatch --quiet <"$p" || die "patch $(basename "$p") does not apply"
done

# ------------------------------------------------------------------ build + install into the venv
LOG=$WORK/build.log
if [ "${ME_CUDA:-0}" = 1 ]; then
    export MINKOWSKI_FORCE_CUDA=1 ${CUDA_HOME:+MINKOWSKI_CUDA_HOME=$CUDA_HOME}
    kind=CUDA
else
    export MINKOWSKI_CPU_ONLY=1
    kind=CPU-only
fi
export MINKOWSKI_BLAS=openblas MAX_JOBS=${MAX_JOBS:-2}
export PATH="$(dirname "$PY"):$PATH"   # the venv's ninja, which torch's extension builder looks for
echo "building MinkowskiEngine $VERSION ($kind, openblas) against torch $TORCH with MAX_JOBS=$MAX_JOBS" \
     "(6-12 minutes and 3 GB on 2 cores); log: $LOG"
start=$SECONDS
# --no-build-isolation: setup.py imports torch and must see the venv's. --no-deps: torch and numpy are there.
if ! (cd "$SRC" && "$PY" -m pip install --no-build-isolation --no-deps --no-cache-dir -v . >"$LOG" 2>&1); then
    tail -n 40 "$LOG" >&2
    die "the MinkowskiEngine build failed (full log: $LOG)"
fi
echo "built and installed in $(( (SECONDS - start) / 60 )) min $(( (SECONDS - start) % 60 )) s"
