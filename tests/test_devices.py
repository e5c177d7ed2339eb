"""Device choice: strategy table (TF_CONFIG included), precision, lock keys, device summary."""

from __future__ import annotations

import json

import pytest

from segcore.errors import ConfigError
from segcore.training import devices
from segcore.training.devices import (
    DeviceInfo,
    apply_precision,
    choose_precision,
    choose_strategy_name,
    configure_gpus,
    count_visible_gpus,
    default_lock_key,
    describe_devices,
    device_summary,
    lock_key,
    make_strategy,
)


def tf_config(workers, chief=(), task=True):
    data = {"cluster": {"worker": list(workers)}}
    if chief:
        data["cluster"]["chief"] = list(chief)
    if task:
        data["task"] = {"type": "worker", "index": 0}
    return json.dumps(data)


@pytest.mark.parametrize(
    ("n_gpus", "config", "expected"),
    [
        (0, None, "one_device_cpu"),
        (1, None, "one_device_gpu"),
        (2, None, "mirrored"),
        (8, None, "mirrored"),
        (0, "", "one_device_cpu"),
        (1, "  ", "one_device_gpu"),
        (0, tf_config(["host1:2222"]), "one_device_cpu"),
        (1, tf_config(["host1:2222"]), "one_device_gpu"),
        (2, tf_config(["host1:2222"]), "mirrored"),
        (0, json.dumps({"task": {"type": "worker", "index": 0}}), "one_device_cpu"),
        (0, tf_config(["host1:2222", "host2:2222"]), "multi_worker"),
        (2, tf_config(["host1:2222", "host2:2222"]), "multi_worker"),
        (1, tf_config(["host2:2222"], chief=["host1:2222"]), "multi_worker"),
    ],
)
def test_strategy_table(n_gpus, config, expected):
    assert choose_strategy_name(n_gpus, config) == expected


@pytest.mark.parametrize(
    "config",
    [
        "not json",
        "[1, 2]",
        json.dumps({"cluster": ["host1:2222"]}),
        json.dumps({"cluster": {"worker": "host1:2222"}}),
        json.dumps({"cluster": {"worker": ["host1:2222", 3]}}),
        tf_config(["host1:2222", "host2:2222"], task=False),
    ],
)
def test_malformed_tf_config(config):
    with pytest.raises(ConfigError, match="TF_CONFIG") as info:
        choose_strategy_name(1, config)
    assert "expected e.g." in str(info.value)


def test_negative_gpu_count():
    with pytest.raises(ValueError, match="n_gpus"):
        choose_strategy_name(-1, None)


def test_precision_and_lock_key():
    assert choose_precision(0) == "float32"
    assert choose_precision(1) == choose_precision(4) == "mixed_float16"
    assert lock_key(0) == "cpu"
    assert lock_key(1) == lock_key(4) == "gpu0"
    assert default_lock_key() == lock_key(count_visible_gpus())


@pytest.mark.parametrize(
    ("visible", "expected"),
    [(None, 4), ("", 0), ("-1", 0), ("0,1", 2), ("1", 1), ("0,-1,2", 1), ("0,1,2,3,4,5", 4)],
)
def test_count_visible_gpus(monkeypatch, visible, expected):
    monkeypatch.setattr(devices, "_physical_nvidia_gpus", lambda: 4)
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert count_visible_gpus() == expected


def test_gpu_memory_follows_cuda_visible_devices(monkeypatch):
    rows = [["0", "GPU-aaaa-1111", "81559"], ["1", "GPU-bbbb-2222", "40960"]]
    monkeypatch.setattr(devices, "_nvidia_smi", lambda *query: rows)
    mib = 1024 * 1024
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert devices._gpu_memory_by_index() == {0: 81559 * mib, 1: 40960 * mib}
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert devices._gpu_memory_by_index() == {0: 40960 * mib}
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-bbbb,0")
    assert devices._gpu_memory_by_index() == {0: 40960 * mib, 1: 81559 * mib}


def test_summary_of_given_devices():
    cpu = DeviceInfo("CPU:0", "CPU", "2 cores", 8 << 30)
    h100 = DeviceInfo("GPU:0", "GPU", "NVIDIA H100 80GB HBM3", 80 << 30, (9, 0))
    other = DeviceInfo("GPU:1", "GPU", "NVIDIA H100 80GB HBM3")
    assert device_summary([cpu]) == "CPU"
    assert device_summary([h100, cpu]) == "GPU:0 NVIDIA H100 80GB HBM3"
    assert device_summary([h100, other, cpu]) == (
        "GPU:0 NVIDIA H100 80GB HBM3, GPU:1 NVIDIA H100 80GB HBM3"
    )
    assert DeviceInfo("GPU:0", "GPU").label == "GPU:0"


# --- with TensorFlow (this machine: CPU only) -------------------------------------------------
@pytest.fixture
def tf():
    return pytest.importorskip("tensorflow")


def test_devices_on_this_machine(tf):
    n_gpus = len(tf.config.list_physical_devices("GPU"))
    found = describe_devices()
    assert [d.kind for d in found] == ["GPU"] * n_gpus + ["CPU"]
    assert found[-1].memory_bytes > 0
    assert configure_gpus() == configure_gpus() == n_gpus  # idempotent
    summary = device_summary()
    if n_gpus == 0:
        assert summary == "CPU"
    else:
        assert summary.startswith("GPU:0 ")


def test_one_device_cpu_strategy(tf):
    strategy = make_strategy("one_device_cpu")
    assert isinstance(strategy, tf.distribute.OneDeviceStrategy)
    assert strategy.num_replicas_in_sync == 1
    with strategy.scope():
        variable = tf.Variable(1.0)
    assert "CPU:0" in variable.device


def test_make_strategy_errors(tf):
    with pytest.raises(ConfigError, match="unknown strategy"):
        make_strategy("tpu")
    if not tf.config.list_physical_devices("GPU"):
        for name in ("one_device_gpu", "mirrored"):
            with pytest.raises(ConfigError, match="needs a GPU"):
                make_strategy(name)


@pytest.fixture
def restore_policy():
    keras = pytest.importorskip("keras")
    before = keras.mixed_precision.global_policy().name
    yield keras
    keras.mixed_precision.set_global_policy(before)


def test_apply_precision(restore_policy):
    keras = restore_policy
    apply_precision("mixed_bfloat16")
    assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"
    apply_precision(choose_precision(0))
    assert keras.mixed_precision.global_policy().name == "float32"
    with pytest.raises(ConfigError, match="unknown precision"):
        apply_precision("float8")


def test_training_device_label_without_and_with_gpus(monkeypatch):
    from segcore.training import devices

    monkeypatch.setattr(devices, "count_visible_gpus", lambda: 0)
    assert devices.training_device_label().startswith("CPU (")
    monkeypatch.setattr(devices, "count_visible_gpus", lambda: 2)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    rows = [
        ["0", "GPU-aaa", "NVIDIA H100 80GB HBM3", "81559"],
        ["1", "GPU-bbb", "NVIDIA H100", "81559"],
    ]
    monkeypatch.setattr(devices, "_nvidia_smi", lambda *query: rows)
    label = devices.training_device_label()
    assert label == (
        "GPU:0 NVIDIA H100 80GB HBM3 (80 GB), GPU:1 NVIDIA H100 (80 GB), precision mixed_float16"
    )
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    monkeypatch.setattr(devices, "count_visible_gpus", lambda: 1)
    assert devices.training_device_label().startswith("GPU:0 NVIDIA H100 (80 GB)")
