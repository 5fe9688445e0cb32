#!/usr/bin/env bash
# Packs what the GPU checks need into build/gpu-bundle.tar.xz (an ignored path, carried to the GPU
# machine): the slm and parity_tests binaries built here, the Debian shared libraries they load
# (everything but glibc, libstdc++ and LibTorch, which the GPU machine's torch 2.11 wheel provides:
# the same wheel these binaries were linked against), a stub for OpenCV's imgcodecs (see
# imgcodecs_stub.cpp) and espeak-ng's data. Run scripts/build first.
# Why not build there: 15 minutes of device time must not go to a cold C++ build.
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${1:-build}
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/bin" "$stage/lib"
cp "$build/cli/slm" "$build/tests/parity/parity_tests" "$stage/bin/"
cp "$build/lib/libslm_spm_shim.so" "$stage/lib/"
skip='/(libc|libm|libpthread|libdl|librt|libstdc\+\+|libgcc_s|ld-linux-x86-64)\.so|/torch/lib/|/nvidia/|libslm_spm_shim|libopencv_imgcodecs'
needed=$(for b in "$stage"/bin/*; do readelf -d "$b" | sed -n 's/.*NEEDED.*\[\(.*\)\]/\1/p'; done | sort -u)
libs=$(ldconfig -p)
for lib in $needed; do
  path=$(awk -v l="$lib" '$1 == l && $0 ~ /x86-64/ {print $NF}' <<<"$libs" | head -1)
  if [ -z "$path" ] || [[ "$path" =~ $skip ]]; then continue; fi
  echo "$path"; ldd "$path" | awk '$3 ~ /^\// {print $3}'
done | sort -u | { grep -Ev "$skip" || true; } > "$stage/closure.txt"
while read -r p; do cp -L "$p" "$stage/lib/$(basename "$p")"; done < "$stage/closure.txt"
rm "$stage/closure.txt"
g++ -O2 -shared -fPIC -Wl,-soname,libopencv_imgcodecs.so.406 -I/usr/include/opencv4 \
  scripts/gpu/imgcodecs_stub.cpp -o "$stage/lib/libopencv_imgcodecs.so.406" -lopencv_core
cp -r /usr/lib/x86_64-linux-gnu/espeak-ng-data "$stage/espeak-ng-data"
tar -C "$stage" -cf - . | xz -T2 -6 > "$build/gpu-bundle.tar.xz"
echo "$build/gpu-bundle.tar.xz: $(du -h "$build/gpu-bundle.tar.xz" | cut -f1), $(ls "$stage/lib" | wc -l) libraries"
