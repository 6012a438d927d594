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

Where a session runs: ``STREAMRANK_DEVICE`` (read when a session is created, not at import)
is ``auto`` (the default), ``cpu``, ``cuda`` or ``tensorrt``; :func:`choose_providers` turns it
and onnxruntime's available execution providers into the providers a session asks for.

- ``auto`` uses CUDA where onnxruntime offers it (the ``onnxruntime-gpu`` wheel, the ``gpu``
  extra) and the CPU otherwise, so a CPU install behaves exactly as before;
- ``cuda`` and ``tensorrt`` insist: asking for a provider onnxruntime does not offer is an
  error, not a silent CPU fallback, so a GPU deployment that lost its GPU wheel says so;
- TensorRT is never picked by ``auto``: it builds an engine per new input shape on first
  use (minutes), and the dynamic batch and sequence shapes of re-ranking make many shapes.

The CPU provider always comes last, so nodes a GPU provider cannot run stay on the CPU.
The callers' one-session-per-core concurrency is a CPU design; on a GPU one stream of larger
batches is what pays (see :func:`on_gpu`).

Examples
--------
>>> physical_cores() >= 1
True
>>> options = session_options(threads=1)
>>> options.intra_op_num_threads
1
>>> choose_providers("auto", ["CUDAExecutionProvider", "CPUExecutionProvider"])
['CUDAExecutionProvider', 'CPUExecutionProvider']
>>> choose_providers("auto", ["CPUExecutionProvider"])
['CPUExecutionProvider']
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import onnxruntime as ort

log = logging.getLogger(__name__)

DISABLED_OPTIMIZERS = ("SkipLayerNormFusion",)
DEVICE_ENV = "STREAMRANK_DEVICE"
DEVICES = ("auto", "cpu", "cuda", "tensorrt")
CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"
GPU_PROVIDERS = (CUDA, TENSORRT)
GPU_INSTALL = (
    "pip install '.[gpu]' && pip uninstall -y onnxruntime onnxruntime-gpu && "
    "pip install onnxruntime-gpu (the two wheels share one folder)"
)


class DeviceError(ValueError):
    """An unknown ``STREAMRANK_DEVICE``, or a device onnxruntime cannot run on here."""


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


def configured_device() -> str:
    """``STREAMRANK_DEVICE`` (lower-cased), ``auto`` when unset."""
    return os.environ.get(DEVICE_ENV, "auto").strip().lower() or "auto"


def choose_providers(device: str, available: Sequence[str]) -> list[str]:
    """The execution providers, best first, a session on ``device`` asks for.

    Parameters
    ----------
    device
        ``auto``, ``cpu``, ``cuda`` or ``tensorrt`` (see the module docstring).
    available
        What ``onnxruntime.get_available_providers()`` reports.

    Raises
    ------
    DeviceError
        An unknown device, or ``cuda``/``tensorrt`` where onnxruntime does not offer it.

    Examples
    --------
    >>> choose_providers("tensorrt", [TENSORRT, CUDA, CPU])
    ['TensorrtExecutionProvider', 'CUDAExecutionProvider', 'CPUExecutionProvider']
    >>> choose_providers("cpu", [CUDA, CPU])
    ['CPUExecutionProvider']
    """
    if device not in DEVICES:
        raise DeviceError(f"{DEVICE_ENV}={device!r}: expected one of {', '.join(DEVICES)}")
    wanted = {"auto": [CUDA], "cpu": [], "cuda": [CUDA], "tensorrt": [TENSORRT, CUDA]}[device]
    missing = [p for p in wanted if p not in available]
    if missing and device != "auto":
        raise DeviceError(
            f"{DEVICE_ENV}={device}: onnxruntime offers {', '.join(available) or 'nothing'}, "
            f"not {', '.join(missing)}\nfix: {GPU_INSTALL}, or set {DEVICE_ENV}=cpu"
        )
    return [p for p in wanted if p in available] + [CPU]


def on_gpu(session: ort.InferenceSession) -> bool:
    """Whether ``session`` runs on a GPU provider (callers then batch larger, on one stream)."""
    return any(p in GPU_PROVIDERS for p in session.get_providers())


def load_session(
    model: str | Path, threads: int = 1, device: str | None = None
) -> ort.InferenceSession:
    """An onnxruntime session for ``model`` with :func:`session_options`.

    Parameters
    ----------
    model
        The ``.onnx`` file.
    threads
        Intra-op threads of the CPU provider.
    device
        ``auto``, ``cpu``, ``cuda`` or ``tensorrt``; default :func:`configured_device`.

    Raises
    ------
    DeviceError
        See :func:`choose_providers`.
    """
    device = device or configured_device()
    providers = choose_providers(device, ort.get_available_providers())
    session = ort.InferenceSession(
        str(model),
        sess_options=session_options(threads),
        providers=providers,
        disabled_optimizers=list(DISABLED_OPTIMIZERS),
    )
    if len(providers) > 1 and not on_gpu(session):
        # onnxruntime falls back to the CPU when the GPU provider fails to start (no device,
        # missing CUDA libraries); an explicit request must not pass unnoticed.
        if device != "auto":
            raise DeviceError(f"{DEVICE_ENV}={device}: the GPU provider did not start for {model}")
        log.warning("GPU provider did not start for %s; running on the CPU", model)
    return session
