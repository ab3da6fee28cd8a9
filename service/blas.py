"""numpy's BLAS held to one thread in the serving process.

OpenBLAS computes each matrix product on a thread per core and keeps those threads spinning a
while after. A server's products are small (a point cloud's distances to the points its model
saw) and come from several request threads at once, beside the runtime's own thread pool, so
the extra threads only compete for the same cores: on a busy machine such a product takes
several times longer on a thread per core than on one (docs/scheduling.md, "numpy's BLAS").
"""

from __future__ import annotations

from threadpoolctl import threadpool_limits


def one_blas_thread() -> None:
    """Every BLAS library loaded in this process (numpy's OpenBLAS) computes on one thread from
    now on; onnxruntime's thread pool is its own and unaffected."""
    threadpool_limits(limits=1, user_api="blas")
