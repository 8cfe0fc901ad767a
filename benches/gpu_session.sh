#!/bin/bash
# The GPU checks on a machine with an NVIDIA GPU and numba-cuda, with or without anant-fast installed
# (the tree is imported as it is): benches/gpu_check.py one workload per process, each with its own
# time limit (a failure or a slow part costs only itself), then tests/cuda on the GPU.
#   bash benches/gpu_session.sh            # logs and JSON under $OUT (default /tmp/gpu_session)
# PARTS="collapse:80" overrides the workloads (name:seconds), TEST_S the tests' limit in seconds.
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_session}; mkdir -p "$OUT" /tmp/gpu_session_site
if ! python3 -c "import anant_fast.kernels" 2>/dev/null; then   # not installed: import the tree
  ln -sfn ../kernels anant_fast/kernels; ln -sfn ../distributed anant_fast/distributed
fi
# numba-cuda 0.30.4 registers np.row_stack, which numpy 2.5 removed (kernels/target.py names that
# mismatch); defining it again lets such an image run the checks.
printf 'import numpy\nif not hasattr(numpy, "row_stack"):\n    numpy.row_stack = numpy.vstack\n' \
  > /tmp/gpu_session_site/sitecustomize.py
export PYTHONPATH=/tmp/gpu_session_site:$PWD PYTHONUNBUFFERED=1 RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 -c "import sys, numba, numba_cuda, numpy; print(sys.version.split()[0], 'numba', numba.__version__,
 'numba-cuda', numba_cuda.__version__, 'numpy', numpy.__version__)"
for part in ${PARTS:-superposition:80 collapse:80 mahalanobis:60 curvature:400}; do
  name=${part%%:*}
  timeout "${part##*:}" python3 benches/gpu_check.py --parts "$name" --json "$OUT/$name.json" 2>&1 \
    | tee "$OUT/$name.log" | grep -v "^$\|^| workload\|^|---"
  echo "gpu_check $name: exit ${PIPESTATUS[0]}"
done
timeout "${TEST_S:-150}" python3 -P -m pytest -q -n 12 -p no:cacheprovider tests/cuda > "$OUT/tests.log" 2>&1
echo "tests/cuda: exit $?"; grep -E "^(FAILED|ERROR)|passed|failed" "$OUT/tests.log" | tail -20
