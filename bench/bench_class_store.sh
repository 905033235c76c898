#!/bin/bash
# What a class gets from a teacher's run store (README "Preparing a class", project issue 14):
# the archive size of every finished run in the store that this kit reuses (`--current`), and the seconds of notebooks 00-10 on a
# student's machine after `runs import` (an empty store, a cache with the rendered data but no
# pretrained backbone: the archive brings it). Run it after `make reproduce` has finished.
#
#   bash bench/bench_class_store.sh [OUT_DIR]        (default /tmp/class-store; PRESET=smoke to try it)
#   ONLY="00 01 02" bash bench/bench_class_store.sh  (only those notebooks, for a store that holds
#                                                      only their runs)
#
# Prints the archive size, the import time, the notebooks' total time, and how many runs the
# notebooks trained (expected: none). Per-notebook seconds are in OUT_DIR/nb/report.md.
set -euo pipefail
OUT=${1:-/tmp/class-store}
PY=${PY:-.venv/bin/python}
PRESET=${PRESET:-quick}
TEACHER_CACHE=${VTAGML_CACHE:-$HOME/.cache/vtagml}
rm -rf "$OUT" && mkdir -p "$OUT"
# seconds LOG CMD...: run CMD with its output in LOG, print the wall-clock seconds it took
seconds() { local log=$1; shift; local s=$(date +%s.%N); "$@" > "$log" 2>&1 || true; local e=$(date +%s.%N); echo "$e - $s" | bc; }

$PY -m vtagml_core runs list | tee "$OUT/runs.md"
# only the runs this kit reuses: a teacher's store also holds runs of older renderers or kits
t_export=$(seconds "$OUT/export.log" $PY -m vtagml_core runs export --current --out "$OUT/class.tar.gz")
size=$(stat -c %s "$OUT/class.tar.gz")

# the student: rendered data (as after notebook 00), no pretrained backbone, an empty store
mkdir -p "$OUT/student-cache" && cp -r "$TEACHER_CACHE/data" "$OUT/student-cache/"
export VTAGML_CACHE="$OUT/student-cache" VTAGML_RUNS="$OUT/student-store"
t_import=$(seconds "$OUT/import.log" $PY -m vtagml_core runs import "$OUT/class.tar.gz")
t_nb=$(seconds "$OUT/nb.log" $PY -m vtagml_core notebooks run --preset "$PRESET" --seeds 0 --out "$OUT/nb" \
       ${ONLY:+--only $ONLY})
trained=$(grep -ho "([0-9]* trained now" "$OUT/nb/report.md" | grep -o "[0-9]*" | paste -sd+ | bc || echo "?")

echo "archive: $size bytes ($(echo "scale=1; $size / 1048576" | bc) MiB), export ${t_export} s"
echo "import into an empty store: ${t_import} s; backbone installed: $(ls "$OUT/student-cache/backbones" 2>/dev/null | tr '\n' ' ')"
echo "notebooks ${ONLY:-00-10} on the imported store: ${t_nb} s; runs trained by them: ${trained:-0} (expected 0)"
