#!/bin/bash -eu
# ClusterFuzzLite build: one fuzz target per device, each a PyInstaller bundle of
# .clusterfuzzlite/fuzz_device.py with the device options baked in (compile_python_fuzzer
# is OSS-Fuzz's helper for atheris targets).
pip3 install .
for dev in virtio-rng virtio-blk planted-off-by-one; do
    sed "s/@DEVICE@/$dev/" .clusterfuzzlite/fuzz_device.py > "fuzz_${dev//-/_}.py"
    compile_python_fuzzer "fuzz_${dev//-/_}.py" --add-data "firmware:firmware"
done
