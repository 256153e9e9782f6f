# Sourced by the device scripts: puts the CUDA 13 / cuDNN 9 libraries the engine loads at run
# time (driver, cuDNN, NVRTC, nvJPEG) on LD_LIBRARY_PATH, wherever this image keeps them.
dirs=""
for lib in 'libcudnn.so.9*' 'libnvrtc.so.13*' 'libnvjpeg.so.13*'; do
  d=$(find /usr/local/cuda*/ /opt /usr/lib /usr/local/lib -name "$lib" -not -path '*/stubs/*' 2>/dev/null | head -1)
  [ -n "$d" ] && dirs="$dirs:$(dirname "$d")"
done
export LD_LIBRARY_PATH="${dirs#:}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
