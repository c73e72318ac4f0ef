"""Copies of an export with one archive entry changed, for the tests of what C++ clients refuse.

A TorchScript export is a zip archive `<name>/...` whose extra files live under `<name>/extra/`
and are read by name, so rewriting one entry in place (same names, same order, same layout) gives
a file libtorch opens exactly like the original except for that entry.
"""

from __future__ import annotations

import json
import pickle
import zipfile
from collections.abc import Callable
from pathlib import Path


def rewrite_entries(source: Path, destination: Path, replace: dict[str, bytes]) -> Path:
    """Copy `source` to `destination`, replacing each entry whose name ends with a key of `replace`."""
    found = set()
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(destination, "w") as copy:
        for info in original.infolist():
            content = original.read(info.filename)
            for suffix, new_content in replace.items():
                if info.filename.endswith("/" + suffix):
                    content = new_content
                    found.add(suffix)
            copy.writestr(info, content)  # keeps the name, compression and (stored) alignment
    assert found == set(replace), f"{source} has no entries {set(replace) - found}"
    return destination


def read_entry(path: Path, suffix: str) -> str:
    with zipfile.ZipFile(path) as archive:
        name = next(n for n in archive.namelist() if n.endswith("/" + suffix))
        return archive.read(name).decode()


def with_metadata(
    source: Path,
    destination: Path,
    text: Callable[[str], str] = lambda text: text,
    record: Callable[[dict], dict] = lambda record: record,
) -> Path:
    """A copy whose mdplugin.txt and mdplugin.json went through `text` and `record`."""
    new_text = text(read_entry(source, "extra/mdplugin.txt"))
    new_record = record(json.loads(read_entry(source, "extra/mdplugin.json")))
    return rewrite_entries(
        source,
        destination,
        {"extra/mdplugin.txt": new_text.encode(), "extra/mdplugin.json": json.dumps(new_record, indent=2).encode()},
    )


def with_shortest_distances(source: Path, destination: Path, distances: dict[str, float]) -> Path:
    """A copy that carries the training data's shortest distances ({"H-O": 0.95, ...}, Å)."""
    line = "shortest_distance=" + " ".join(f"{pair}:{value!r}" for pair, value in distances.items())

    def record(metadata: dict) -> dict:
        return {**metadata, "domain": {"shortest_distance": distances}}

    return with_metadata(source, destination, lambda text: text.rstrip("\n") + "\n" + line + "\n", record)


def swapped_symbols(source: Path, destination: Path) -> Path:
    """A copy whose mdplugin.txt lists the first two element symbols swapped (H C N O -> C H N O),
    while atomic_numbers and mdplugin.json keep the true order."""

    def swap(text: str) -> str:
        lines = text.splitlines()
        for index, line in enumerate(lines):
            if line.startswith("elements="):
                symbols = line.removeprefix("elements=").split()
                symbols[0], symbols[1] = symbols[1], symbols[0]
                lines[index] = "elements=" + " ".join(symbols)
        return "\n".join(lines) + "\n"

    return with_metadata(source, destination, swap)


class Payload:
    """A pickle that would run a shell command if an unpickler executed what it names."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def with_pickle(source: Path, destination: Path, entry: str, payload: object) -> Path:
    """A copy whose `entry` (data.pkl or constants.pkl) is the pickle of `payload`."""
    return rewrite_entries(source, destination, {entry: pickle.dumps(payload, protocol=2)})
