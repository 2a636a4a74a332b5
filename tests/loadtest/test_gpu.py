"""The GPU facts the benchmarks record, on a machine without a GPU: parsing nvidia-smi, and None without it."""

import shutil

from loadtest import gpu


def test_samples_parse_and_skip_what_is_not_two_numbers():
    text = "37, 1024\n100, 2048\n[N/A], 10\n5\n42, 4096"
    assert gpu.parse_samples(text) == [(37.0, 1024.0), (100.0, 2048.0), (42.0, 4096.0)]


def test_summary_averages_utilization_and_keeps_the_peak_memory():
    monitor = gpu.GpuMonitor()
    assert monitor.summary() is None
    monitor.samples = [(20.0, 100.0), (60.0, 300.0), (100.0, 200.0)]
    assert monitor.summary() == {
        "gpu_utilization_mean": 60.0,
        "gpu_utilization_max": 100.0,
        "gpu_memory_used_mib_max": 300.0,
        "gpu_samples": 3,
    }


def test_without_nvidia_smi_there_is_no_gpu_and_the_monitor_is_silent(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert gpu.gpu_info() is None
    with gpu.GpuMonitor() as monitor:
        pass
    assert monitor.summary() is None


def test_gpu_info_reads_the_first_gpu(monkeypatch, tmp_path):
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'NVIDIA H100 80GB HBM3, 580.159.04, 81559'\necho 'second, 1, 2'\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert gpu.gpu_info() == {"name": "NVIDIA H100 80GB HBM3", "driver": "580.159.04", "memory_mib": 81559.0}
