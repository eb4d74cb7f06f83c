"""The GPU's total-energy counter, read through NVML with ctypes (no Python
package needed; NVML ships with the NVIDIA driver). The counter counts
millijoules since the driver was loaded, on Volta and newer GPUs."""

from __future__ import annotations

import ctypes
from typing import Callable, Optional

import torch

__all__ = ["energy_reader"]


def _load():
    for name in ("libnvidia-ml.so.1", "libnvidia-ml.so", "nvml.dll"):
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        if lib.nvmlInit_v2() == 0:
            return lib
    return None


def energy_reader(device: torch.device) -> Optional[Callable[[], int]]:
    """A function returning the counter of ``device`` in mJ, or None where NVML
    or the counter is not available. NVML numbers GPUs as the driver does;
    ``CUDA_VISIBLE_DEVICES`` remapping is resolved through the PCI bus id."""
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    lib = _load()
    if lib is None:
        return None
    handle = ctypes.c_void_p()
    props = torch.cuda.get_device_properties(device)
    bus = getattr(props, "pci_bus_id", None)
    if bus is not None:
        pci = f"{getattr(props, 'pci_domain_id', 0):08x}:{bus:02x}:{getattr(props, 'pci_device_id', 0):02x}.0"
        ok = lib.nvmlDeviceGetHandleByPciBusId_v2(pci.encode(), ctypes.byref(handle)) == 0
    else:
        ok = False
    if not ok and lib.nvmlDeviceGetHandleByIndex_v2(device.index or 0, ctypes.byref(handle)) != 0:
        return None
    value = ctypes.c_ulonglong()
    if lib.nvmlDeviceGetTotalEnergyConsumption(handle, ctypes.byref(value)) != 0:
        return None

    def read() -> int:
        lib.nvmlDeviceGetTotalEnergyConsumption(handle, ctypes.byref(value))
        return int(value.value)

    return read
