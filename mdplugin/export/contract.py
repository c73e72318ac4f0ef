"""The export format's names and versions, and the checks every reader of an export's metadata makes."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from mdplugin.elements import atomic_number

EXPORT_FORMAT = "mdplugin-export"
GLOBAL_EXPORT_VERSION = 1  # the global model's interface has not changed since version 1
LOCAL_EXPORT_VERSION = 2  # periodic cells, the virial and forward_neighbors
SUPPORTED_EXPORT_VERSIONS = (1, 2)
METADATA_JSON = "mdplugin.json"
METADATA_TEXT = "mdplugin.txt"


class ExportError(ValueError):
    """A file that is not a usable mdplugin export."""


def read_export_metadata(path: str | Path) -> dict:
    """Metadata of an export file, checked against the formats this mdplugin reads (no model code is loaded)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file {path} does not exist")
    try:
        with zipfile.ZipFile(path) as archive:
            return parse_export_metadata(archive, path)
    except zipfile.BadZipFile:
        raise ExportError(
            f"{path} is not a TorchScript export (not a zip archive); make one with `mdplugin export`"
        ) from None


def parse_export_metadata(archive: zipfile.ZipFile, path: Path) -> dict:
    """The checked metadata of an export archive already opened (`path` names it in messages)."""
    names = archive.namelist()
    json_name = next((n for n in names if n.endswith(f"extra/{METADATA_JSON}")), None)
    text_name = next((n for n in names if n.endswith(f"extra/{METADATA_TEXT}")), None)
    if json_name is None:
        raise ExportError(
            f"{path} is a torch file without mdplugin metadata; export a checkpoint with `mdplugin export`"
        )
    json_bytes = archive.read(json_name)
    text = archive.read(text_name).decode("utf-8", "replace") if text_name else None
    try:
        metadata = json.loads(json_bytes)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ExportError(f"{path}: its {METADATA_JSON} is not valid JSON; re-export the checkpoint") from None
    if not isinstance(metadata, dict):
        raise ExportError(f"{path}: its {METADATA_JSON} is not a JSON object; re-export the checkpoint")
    if metadata.get("format") != EXPORT_FORMAT:
        raise ExportError(f"{path} has format {metadata.get('format')!r}, not {EXPORT_FORMAT!r}")
    if metadata.get("format_version") not in SUPPORTED_EXPORT_VERSIONS:
        raise ExportError(
            f"{path} has export format version {metadata.get('format_version')}; this mdplugin reads "
            f"versions {list(SUPPORTED_EXPORT_VERSIONS)}. Re-export the checkpoint with this mdplugin."
        )
    check_elements_record(metadata, text, path)
    return metadata


def check_elements_record(metadata: dict, text: str | None, path: Path) -> None:
    """Every symbol names its atomic number, and the flat text record (read by C++ clients) agrees."""
    for key in ("elements", "atomic_numbers", "dtype", "interaction_range"):
        if key not in metadata:
            raise ExportError(f"{path}: its metadata has no {key!r}; re-export the checkpoint with `mdplugin export`")
    elements, numbers = metadata["elements"], metadata["atomic_numbers"]
    try:
        expected = [atomic_number(symbol) for symbol in elements]
    except (AttributeError, TypeError, ValueError):
        raise ExportError(f"{path}: its metadata names unknown elements {elements}; re-export the checkpoint") from None
    if expected != list(numbers):
        raise ExportError(
            f"{path}: its metadata pairs the elements {elements} with atomic numbers {numbers}; the file is "
            "corrupt or was edited by hand: re-export the checkpoint"
        )
    if metadata["dtype"] not in ("float32", "float64"):
        raise ExportError(f"{path}: unknown dtype {metadata['dtype']!r} in its metadata; use float32 or float64")
    if text is None:
        raise ExportError(f"{path} has no {METADATA_TEXT}, which the LAMMPS and C++ clients read; re-export it")
    flat = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    if flat.get("elements", "").split() != list(elements) or flat.get("atomic_numbers", "").split() != [
        str(z) for z in numbers
    ]:
        raise ExportError(
            f"{path}: {METADATA_TEXT} and {METADATA_JSON} disagree about the elements; the file is corrupt or "
            "was edited by hand: re-export the checkpoint"
        )
