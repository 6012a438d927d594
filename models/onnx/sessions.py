"""onnxruntime sessions tuned for small CPUs, and how many physical cores there are.

The models are int8 BERTs whose time goes to ``MatMulInteger`` (VNNI where the CPU has it).
What suits a small CPU (the measurements are in docs/models.md and docs/benchmarks.md):

- one single-threaded run per core, on different batches, beats one run with two intra-op
  threads (no barrier between the threads, and a preempted thread stalls only its own batch):
  the caller runs batches concurrently (see :mod:`streamrank.models.scoring.cross_encoder`);
- onnxruntime's ``SkipLayerNormFusion`` turns ``Add + LayerNormalization`` into
  ``SkipLayerNormalization``, whose CPU kernel (onnxruntime 1.32) is about ten times slower
  than the two ops it replaces: it is disabled;
- every other graph optimization is on (``ORT_ENABLE_ALL``): ``MatMulInteger`` chains become
  ``DynamicQuantizeMatMul`` / ``MatMulIntegerToFloat``.

Examples
--------
>>> physical_cores() >= 1
True
>>> options = session_options(threads=1)
>>> options.intra_op_num_threads
1
"""

from __future__ import annotations

import os
from pathlib import Path

import onnxruntime as ort

DISABLED_OPTIMIZERS = ("SkipLayerNormFusion",)


def physical_cores() -> int:
    """Physical cores this process may run on (hyper-threads counted once).

    Reads the CPU topology in sysfs for the CPUs in this process's affinity mask, and falls
    back to the number of usable CPUs where that is not available.
    """
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
    cores = set()
    for cpu in cpus:
        topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            package = (topology / "physical_package_id").read_text().strip()
            core = (topology / "core_id").read_text().strip()
        except OSError:
            return len(cpus)
        cores.add((package, core))
    return max(1, len(cores))


def session_options(threads: int = 1) -> ort.SessionOptions:
    """Session options for one inference stream using ``threads`` intra-op threads.

    Parameters
    ----------
    threads
        Intra-op threads. Use 1 when the caller runs one batch per core concurrently.
    """
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # warnings about unused initializers are noise here
    if threads == 1:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def load_session(model: str | Path, threads: int = 1) -> ort.InferenceSession:
    """An onnxruntime CPU session for ``model`` with :func:`session_options`."""
    return ort.InferenceSession(
        str(model),
        sess_options=session_options(threads),
        providers=["CPUExecutionProvider"],
        disabled_optimizers=list(DISABLED_OPTIMIZERS),
    )
