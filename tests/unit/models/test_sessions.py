"""Which execution providers a session asks for, from the device setting and what onnxruntime
offers (a fake list: no GPU is needed), and that a CPU install keeps running on the CPU."""

from __future__ import annotations

import pytest

from streamrank.models.onnx import sessions
from streamrank.models.onnx.sessions import (
    CPU,
    CUDA,
    TENSORRT,
    DeviceError,
    choose_providers,
    configured_device,
)

CPU_ONLY = ["AzureExecutionProvider", CPU]
GPU_WHEEL = [TENSORRT, CUDA, CPU]


def test_auto_on_a_cpu_install_is_the_cpu_alone() -> None:
    assert choose_providers("auto", CPU_ONLY) == [CPU]


def test_auto_with_cuda_offered_uses_it_with_the_cpu_behind() -> None:
    assert choose_providers("auto", GPU_WHEEL) == [CUDA, CPU]


def test_auto_never_picks_tensorrt() -> None:
    assert TENSORRT not in choose_providers("auto", GPU_WHEEL)


def test_cpu_ignores_an_offered_gpu() -> None:
    assert choose_providers("cpu", GPU_WHEEL) == [CPU]


def test_cuda_asked_and_offered() -> None:
    assert choose_providers("cuda", [CUDA, CPU]) == [CUDA, CPU]


def test_tensorrt_keeps_cuda_and_cpu_for_what_it_cannot_run() -> None:
    assert choose_providers("tensorrt", GPU_WHEEL) == [TENSORRT, CUDA, CPU]


@pytest.mark.parametrize(("device", "available"), [("cuda", CPU_ONLY), ("tensorrt", [CUDA, CPU])])
def test_an_explicit_gpu_that_is_not_offered_is_an_error(device: str, available: list) -> None:
    with pytest.raises(DeviceError, match="fix:"):
        choose_providers(device, available)


def test_an_unknown_device_is_an_error() -> None:
    with pytest.raises(DeviceError, match="auto, cpu, cuda, tensorrt"):
        choose_providers("gpu", GPU_WHEEL)


def test_the_setting_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STREAMRANK_DEVICE", raising=False)
    assert configured_device() == "auto"
    monkeypatch.setenv("STREAMRANK_DEVICE", " CUDA ")
    assert configured_device() == "cuda"


def test_load_session_refuses_cuda_before_loading_on_a_cpu_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    monkeypatch.setattr(sessions.ort, "get_available_providers", lambda: CPU_ONLY)
    with pytest.raises(DeviceError):
        sessions.load_session(tmp_path / "absent.onnx", device="cuda")


def test_a_session_on_this_install_runs_on_the_cpu(tmp_path) -> None:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    node = helper.make_node("Identity", ["x"], ["y"])
    graph = helper.make_graph(
        [node],
        "identity",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    path = tmp_path / "identity.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    session = sessions.load_session(path, device="cpu")
    assert session.get_providers() == [CPU]
    assert not sessions.on_gpu(session)
