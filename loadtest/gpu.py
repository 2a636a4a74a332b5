"""What the benchmarks record about an NVIDIA GPU, read through `nvidia-smi` (none on a CPU-only host).

`gpu_info()` names the card and driver; `GpuMonitor` samples utilization while a point runs, so a
figure says whether the device or the host was the limit.
"""

import shutil
import subprocess

SAMPLE_MS = 100


def _smi(*args: str, timeout: float = 10) -> str | None:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        return subprocess.run([smi, *args], capture_output=True, text=True, timeout=timeout, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None


def gpu_info() -> dict | None:
    """The first GPU's name, driver and memory, or None where there is no nvidia-smi."""
    out = _smi("--query-gpu=name,driver_version,memory.total", "--format=csv,noheader,nounits")
    if not out or not out.strip():
        return None
    name, driver, memory = (part.strip() for part in out.strip().splitlines()[0].split(","))
    return {"name": name, "driver": driver, "memory_mib": float(memory)}


def parse_samples(text: str) -> list[tuple[float, float]]:
    """`nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader,nounits` lines ->
    (utilization %, memory MiB) pairs; lines that are not two numbers ("[N/A]", a partial last line) are skipped."""
    samples = []
    for line in text.splitlines():
        parts = [part.strip() for part in line.split(",")]
        if len(parts) != 2:
            continue
        try:
            samples.append((float(parts[0]), float(parts[1])))
        except ValueError:
            continue
    return samples


class GpuMonitor:
    """Samples the first GPU every SAMPLE_MS while the block runs; `summary()` is None without a GPU."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen | None = None
        self.samples: list[tuple[float, float]] = []

    def __enter__(self) -> "GpuMonitor":
        smi = shutil.which("nvidia-smi")
        if smi is not None:
            query = ["--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits", f"-lms={SAMPLE_MS}"]
            self._proc = subprocess.Popen([smi, *query], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        return self

    def __exit__(self, *exc) -> None:
        if self._proc is None:
            return
        self._proc.terminate()
        out, _ = self._proc.communicate(timeout=10)
        self.samples = parse_samples(out)

    def summary(self) -> dict | None:
        if not self.samples:
            return None
        utilization = [u for u, _ in self.samples]
        return {
            "gpu_utilization_mean": sum(utilization) / len(utilization),
            "gpu_utilization_max": max(utilization),
            "gpu_memory_used_mib_max": max(m for _, m in self.samples),
            "gpu_samples": len(self.samples),
        }
