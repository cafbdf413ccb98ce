#!/usr/bin/env bash
# The installed runtime end to end: `cmake --install` into a temporary prefix; the runtime links
# without LibTorch and exports only its API; the installed headers compile on their own; the
# examples build out of tree with find_package (shared and static) and with pkg-config; on a
# model trained and exported here with the installed `apot`, the C and C++ examples (and the
# Python one, if numpy and Pillow are there) give the classes `apot run --predictions` gives.
# Usage: test_install.sh BUILD_DIR SOURCE_DIR
set -u
build=$1
src=$2
fail=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
prefix=$tmp/prefix

check install 0 cmake --install "$build" --prefix "$prefix"
[ $fail -eq 0 ] || { echo "$out"; exit 1; }
lib=$(dirname "$(find "$prefix" -name libapot_runtime.so -print -quit)")
for f in "$lib/libapot_runtime.so" "$lib/libapot_runtime.a" "$prefix/include/apot/apot.h" \
         "$prefix/include/apot/runtime/model.h" "$lib/cmake/apot/apotConfig.cmake" \
         "$lib/pkgconfig/apot-runtime.pc" "$prefix/bin/apot"; do
  [ -e "$f" ] || { echo "FAIL install: no $f"; fail=1; }
done
# Only the two public headers: no engine internals.
headers=$(cd "$prefix/include" && find . -type f | sort | tr '\n' ' ')
[ "$headers" = "./apot/apot.h ./apot/runtime/model.h " ] || { echo "FAIL headers: $headers"; fail=1; }

# No LibTorch behind the runtime, and only its API exported.
check ldd 0 ldd "$lib/libapot_runtime.so"
if grep -qiE 'torch|c10|caffe2' <<<"$out"; then echo "FAIL ldd: the runtime links LibTorch: $out"; fail=1; fi
exported=$(nm -D --defined-only -C "$lib/libapot_runtime.so" | awk '{ $1 = ""; $2 = ""; print }' | sed 's/^ *//')
stray=$(grep -vE '^(apot_|apot::runtime::|typeinfo for apot::runtime::|typeinfo name for apot::runtime::|vtable for apot::runtime::)' <<<"$exported" | grep -v '^$')
[ -z "$stray" ] || { echo "FAIL exports: symbols outside the API: $(head -5 <<<"$stray")"; fail=1; }
grep -q '^apot_model_run_u8$' <<<"$exported" || { echo "FAIL exports: no apot_model_run_u8"; fail=1; }
grep -q '^apot::runtime::Model::load' <<<"$exported" || { echo "FAIL exports: no Model::load"; fail=1; }
if grep -qE 'Impl|Inspector|parse_apot|kernels|graph' <<<"$exported"; then
  echo "FAIL exports: internals exported: $(grep -E 'Impl|Inspector|parse_apot|kernels|graph' <<<"$exported" | head -3)"; fail=1
fi

# The headers stand alone: C99 for the C API, C++17 for the C++ API, warnings as errors.
printf '#include <apot/apot.h>\nint main(void) { return apot_version() == 0; }\n' >"$tmp/h.c"
check header-c 0 cc -std=c99 -pedantic -Wall -Wextra -Werror -I"$prefix/include" -c "$tmp/h.c" -o "$tmp/h.o"
printf '#include <apot/runtime/model.h>\nint main() { return apot::runtime::version() == nullptr; }\n' >"$tmp/h.cpp"
check header-cpp 0 c++ -std=c++17 -Wall -Wextra -Werror -I"$prefix/include" -c "$tmp/h.cpp" -o "$tmp/hpp.o"

# A model: a few steps of training on the fixture images, exported; apot run's classes.
images="$src/tests/fixtures/images"
check train 0 "$prefix/bin/apot" train "$src/recipes/cifar10-resnet20-finetune.toml" --out "$tmp/run" \
  --set "data.spec=imagefolder:$images" --set data.val_size=4 --set data.batch_size=8 --set optim.epochs=1 \
  --set run.max_steps_per_epoch=2 --set data.workers=1
check export 0 "$prefix/bin/apot" export --checkpoint "$tmp/run/best.ckpt" --out "$tmp/m.apot"
check run 0 "$prefix/bin/apot" run "$tmp/m.apot" --data "imagefolder:$images" --predictions "$tmp/want.tsv"
[ -s "$tmp/want.tsv" ] || { echo "FAIL run: no predictions: $out"; exit 1; }
[ "$(wc -l <"$tmp/want.tsv")" -eq 30 ] || { echo "FAIL run: want 30 predictions"; fail=1; }
mapfile -t files < <(cut -f1 "$tmp/want.tsv")

same_classes() {  # same_classes NAME FILE: FILE's "path<TAB>class..." lines give want.tsv's classes
  if ! diff <(cut -f1,2 "$2") "$tmp/want.tsv" >"$tmp/diff"; then
    echo "FAIL $1: other classes than apot run: $(head -5 "$tmp/diff")"; fail=1
  fi
}

# find_package: shared, then static.
for kind in shared static; do
  flag=OFF; [ $kind = static ] && flag=ON
  check "cmake-$kind" 0 cmake -S "$src/examples" -B "$tmp/ex-$kind" -DCMAKE_PREFIX_PATH="$prefix" \
    -DAPOT_EXAMPLES_STATIC=$flag -DCMAKE_BUILD_TYPE=Release
  check "build-$kind" 0 cmake --build "$tmp/ex-$kind"
  for ex in classify_c classify_cpp; do
    check "$ex-$kind" 0 "$tmp/ex-$kind/$ex" "$tmp/m.apot" "${files[@]}"
    printf '%s\n' "$out" >"$tmp/$ex-$kind.tsv"
    same_classes "$ex-$kind" "$tmp/$ex-$kind.tsv"
  done
done
# The static examples do not need the shared library.
check ldd-static 0 ldd "$tmp/ex-static/classify_c"
if grep -q apot_runtime <<<"$out"; then echo "FAIL ldd-static: $out"; fail=1; fi
check cpp-threads 0 "$tmp/ex-shared/classify_cpp" --threads 2 "$tmp/m.apot" "${files[@]}"
printf '%s\n' "$out" >"$tmp/threads.tsv"
same_classes cpp-threads "$tmp/threads.tsv"

# pkg-config (relocatable .pc file), the C example.
export PKG_CONFIG_PATH="$lib/pkgconfig"
check pkg-config 0 pkg-config --cflags --libs apot-runtime
expect pkg-config "-lapot_runtime"
# shellcheck disable=SC2046
check cc-pkg-config 0 cc -std=c99 -Wall "$src/examples/classify.c" -o "$tmp/classify_pc" \
  $(pkg-config --cflags --libs apot-runtime) -lturbojpeg -lm
check run-pkg-config 0 env LD_LIBRARY_PATH="$lib" "$tmp/classify_pc" "$tmp/m.apot" "${files[@]}"
printf '%s\n' "$out" >"$tmp/pc.tsv"
same_classes pkg-config "$tmp/pc.tsv"

# The complete example of docs/EMBEDDING.md compiles as it stands and classifies raw pixels.
awk '/^```c$/{f=1;next} /^```$/{if(f){f=0;exit}} f' "$src/docs/EMBEDDING.md" >"$tmp/doc.c"
[ "$(wc -l <"$tmp/doc.c")" -lt 30 ] || { echo "FAIL doc example: 30 lines or more"; fail=1; }
# shellcheck disable=SC2046
check doc-example 0 cc -std=c99 -Wall -Werror "$tmp/doc.c" -o "$tmp/doc" $(pkg-config --cflags --libs apot-runtime)
head -c 3072 /dev/urandom >"$tmp/image.raw"  # 32 x 32 x 3
check doc-run 0 env LD_LIBRARY_PATH="$lib" "$tmp/doc" "$tmp/m.apot" "$tmp/image.raw"
expect doc-run "^(airplane|automobile|bird|cat|deer|dog|frog|horse|ship|truck)$"
head -c 3000 /dev/urandom >"$tmp/short.raw"
check doc-short 1 env LD_LIBRARY_PATH="$lib" "$tmp/doc" "$tmp/m.apot" "$tmp/short.raw"
expect doc-short "input has 3000 values; a batch of 1 3x32x32 images needs 3072"

# Python through ctypes, where numpy and Pillow are installed (nothing else needs Python).
if /usr/bin/python3 -c 'import numpy, PIL' 2>/dev/null; then
  check python 0 env APOT_RUNTIME_LIBRARY="$lib/libapot_runtime.so" /usr/bin/python3 "$src/examples/classify.py" \
    "$tmp/m.apot" "${files[@]}"
  printf '%s\n' "$out" >"$tmp/py.tsv"
  same_classes python "$tmp/py.tsv"
else
  echo "note: python3 with numpy and Pillow not found: the Python example is not run"
fi

# Errors: one line and a non-zero exit.
check c-missing 1 "$tmp/ex-shared/classify_c" "$tmp/none.apot" "${files[0]}"; one_line c-missing
expect c-missing "none.apot: cannot open"
check cpp-missing 1 "$tmp/ex-shared/classify_cpp" "$tmp/none.apot" "${files[0]}"; one_line cpp-missing
head -c 100 "$tmp/m.apot" >"$tmp/short.apot"
check c-truncated 1 "$tmp/ex-shared/classify_c" "$tmp/short.apot" "${files[0]}"; one_line c-truncated
exit $fail
