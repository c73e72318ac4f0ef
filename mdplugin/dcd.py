"""DCD trajectory headers: how many frames a file says it holds, from which step, and their size in bytes.
Read by restarts (to trim a trajectory to a checkpoint) and by `data relabel` (to drop a frame cut short)."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path


@dataclass
class DCDHeader:
    frames: int
    first_step: int  # the step of the first frame
    interval: int  # steps between frames
    atoms: int
    header_bytes: int
    frame_bytes: int


def read_dcd_header(path: Path) -> DCDHeader:
    """The fields of a DCD header (as OpenMM's DCDFile writes it) that say which step each frame is."""
    with open(path, "rb") as handle:
        data = handle.read(100)
        if len(data) < 100 or data[4:8] != b"CORD" or struct.unpack("<i", data[:4])[0] != 84:
            raise ValueError(f"{path} is not a DCD file written by OpenMM; move it away or pass --force")
        frames, first_step, interval = struct.unpack("<3i", data[8:20])
        has_box = struct.unpack("<i", data[48:52])[0]
        comments = struct.unpack("<i", data[92:96])[0]
        handle.seek(104 + comments)
        atoms = struct.unpack("<i", handle.read(4))[0]
    frame_bytes = (56 if has_box else 0) + 3 * (8 + 4 * atoms)
    return DCDHeader(frames, first_step, interval, atoms, 104 + comments + 8, frame_bytes)
