"""One worker process of ``nst bench threads`` (:mod:`benchmarks.threads`).

Run as ``python -m benchmarks.thread_worker SPEC_JSON``.

It sets up the runtime exactly as the ``nst`` command does
(:func:`nst.cli.configure_environment`, before MXNet is imported -- which is why
it is a module of its own), builds one student training step, warms it up,
prints ``{"ready": true, "threads": N}`` and then answers every ``go`` line on
stdin with ``{"seconds": ...}``, the time of ``steps`` steps.
"""

import json
import sys
import tempfile
import time


def main(spec_json):
    spec = json.loads(spec_json)
    from nst.cli import configure_environment
    configure_environment([])

    import mxnet as mx

    from benchmarks.step import build_distiller, distill_step
    from nst.runtime import operator_threads

    with tempfile.TemporaryDirectory(prefix="nst-bench-threads-") as folder:
        distiller = build_distiller(spec["pair"], [mx.cpu()], None, folder, transfer=False,
                                    student_params={"width": spec["width"]})
        step = distill_step(distiller)
        for _ in range(2):  # graph building, memory allocation
            step()
        mx.nd.waitall()
        print(json.dumps({"ready": True, "threads": operator_threads()[0]}), flush=True)
        for line in sys.stdin:
            if line.strip() != "go":
                break
            start = time.perf_counter()
            for _ in range(spec["steps"]):
                step()
            mx.nd.waitall()
            print(json.dumps({"seconds": time.perf_counter() - start}), flush=True)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m benchmarks.thread_worker SPEC_JSON")
    main(sys.argv[1])
