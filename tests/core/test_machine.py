"""The line a benchmark names its machine by: the CPU, its cores, torch threads, a flag when the cores are busy."""

import os

import torch

from lemario.core import device


def test_the_machine_line_names_the_cores_and_flags_a_busy_machine(monkeypatch):
    cores = os.cpu_count()
    monkeypatch.setattr(device.os, "getloadavg", lambda: (0.1, 0.1, 0.1))
    idle = device.machine()
    assert f"{cores} cores" in idle and f"({torch.get_num_threads()} threads)" in idle and device.cpu_name() in idle
    assert "load 0.10" in idle and "BUSY" not in idle
    monkeypatch.setattr(device.os, "getloadavg", lambda: (cores * 0.75, 0.0, 0.0))
    assert "BUSY" in device.machine()
