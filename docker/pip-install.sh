#!/bin/sh
# pip install "$@", from the wheelhouse alone when the image was built with one.
#
# /tmp/wheelhouse is the build context's WHEELHOUSE folder (docker/Dockerfile): when it holds a
# wheel, nothing is fetched from an index, so an offline or locked-down build either finds every
# package there or fails naming the missing one.
set -eu
if ls /tmp/wheelhouse/*.whl >/dev/null 2>&1; then
    exec pip install --no-index --find-links /tmp/wheelhouse "$@"
fi
exec pip install "$@"
