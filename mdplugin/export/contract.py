"""The export format's names and versions, and the checks every reader of an export's metadata makes."""

from __future__ import annotations

import json
import math
import zipfile
from pathlib import Path

from mdplugin.elements import atomic_number

EXPORT_FORMAT = "mdplugin-export"
GLOBAL_EXPORT_VERSION = 1  # the global model's interface has not changed since version 1
LOCAL_EXPORT_VERSION = 3  # 2: periodic cells, the virial and forward_neighbors; 3: per-block exchange methods
# 4: a compiled export (AOT-Inductor package, mdplugin/export/compiled.py), global or local, capture-safe
COMPILED_EXPORT_VERSION = 4
SUPPORTED_EXPORT_VERSIONS = (1, 2, 3, 4)
METADATA_JSON = "mdplugin.json"
METADATA_TEXT = "mdplugin.txt"


# Neighbours per atom within the interaction range beyond which a periodic structure is refused before the model
# runs: a few hundred at most in any material at a sensible range (water at 0.1 atoms/Å^3: 18 within 3.5 Å, 419
# within 10 Å); beyond, the cell is wrong (too small, in nm) or the range too long, and the pair list alone
# takes gigabytes (a 1e-4 Å cell exhausted 6 GB before any message).
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
    check_json_consistent(metadata, path)
    check_text_record(metadata, flat, path)


def check_json_consistent(metadata: dict, path: Path) -> None:
    """The JSON record agrees with itself: the kind, the version, the range and the network's own config."""
    kind, interaction_range = metadata.get("model_kind", "global"), metadata["interaction_range"]
    receptive_field = metadata.get("receptive_field")
    config = metadata.get("model_config") or {}
    problems = []
    if kind not in ("global", "local"):
        problems.append(f"model_kind {kind!r} (neither global nor local)")
    elif (kind == "local") != (interaction_range is not None):
        problems.append(f"model_kind {kind} with interaction_range {interaction_range}")
    elif kind == "local" and metadata["format_version"] < 2:
        problems.append(f"a local model in format version {metadata['format_version']}")
    if "interaction_range" in config and not _same_length(config["interaction_range"], interaction_range):
        problems.append(f"interaction_range {interaction_range} but the network's {config['interaction_range']}")
    if interaction_range is not None and "depth" in config:
        if not _same_length(receptive_field, config["depth"] * interaction_range):
            problems.append(
                f"receptive_field {receptive_field}, not depth {config['depth']} x interaction_range "
                f"{interaction_range}"
            )
    if problems:
        raise ExportError(
            f"{path}: its {METADATA_JSON} contradicts itself ({'; '.join(problems)}); the file is corrupt or was "
            "edited by hand: re-export the checkpoint with `mdplugin export`"
        )


def text_record_values(metadata: dict) -> dict[str, str | None]:
    """What each key of the text record must say, from the JSON record (None: the key may be absent). The C++
    clients read these keys and nothing else; the text record is derived from the JSON one, so a file whose
    two records disagree was damaged or edited, and a C++ client would run another model than Python reports."""
    domain = metadata.get("domain") or {}
    return {
        "format": metadata["format"],
        "format_version": str(metadata["format_version"]),
        "model_kind": metadata.get("model_kind", "global"),
        "dtype": metadata["dtype"],
        "interaction_range": metadata["interaction_range"],
        "receptive_field": metadata.get("receptive_field"),
        "energy_unit": (metadata.get("units") or {}).get("energy"),
        "length_unit": (metadata.get("units") or {}).get("positions"),
        "shortest_distance": domain.get("shortest_distance"),
        "charges": domain.get("charges"),
        "multiplicities": domain.get("multiplicities"),
        "committee": str((metadata.get("committee") or {}).get("members")) if metadata.get("committee") else None,
    }


def check_text_record(metadata: dict, flat: dict[str, str], path: Path) -> None:
    """Every key of the text record (mdplugin.txt, what the LAMMPS pair style and the C++ checker read) says what
    the JSON record says; a key the text record lacks is read by the C++ clients as its documented default."""
    differ = []
    for key, expected in text_record_values(metadata).items():
        found = flat.get(key)
        if key in ("interaction_range", "receptive_field"):
            same = _same_length(_text_length(found), expected)
            if found is None and expected is None:
                same = True
        elif key == "model_kind":
            same = (found or "global") == expected
        # the training domain: optional in the text record (older exports lack it; clients then do not warn)
        elif key == "shortest_distance":
            same = found is None or (bool(expected) and _same_distances(found, expected))
        elif key in ("charges", "multiplicities"):
            same = found is None or (bool(expected) and found.split() == [str(int(v)) for v in expected])
        elif key in ("energy_unit", "length_unit"):
            same = found is None or expected is None or found == expected
        else:
            same = found == expected
        if not same:
            differ.append(f"{key}: {METADATA_TEXT} says {found}, {METADATA_JSON} says {expected}")
    if differ:
        raise ExportError(
            f"{path}: {METADATA_TEXT} (read by LAMMPS and the C++ checker) and {METADATA_JSON} disagree "
            f"({'; '.join(differ)}); the file is corrupt or was edited by hand: re-export the checkpoint with "
            "`mdplugin export`"
        )


def _text_length(text: str | None) -> float | None:
    if text is None or text == "none":
        return None
    try:
        return float(text)
    except ValueError:
        return float("nan")


def _same_length(a, b) -> bool:
    """Two lengths in Å (None: none) are the same to the digits repr() writes."""
    if a is None or b is None:
        return a is None and b is None
    try:
        return math.isclose(float(a), float(b), rel_tol=1e-12, abs_tol=0.0)
    except (TypeError, ValueError):
        return False


def _same_distances(text: str, distances: dict) -> bool:
    """`H-O:0.9300 ...` against {"H-O": 0.93, ...}: the same pairs, each to the 4 decimals the text holds."""
    try:
        found = {pair: float(value) for pair, value in (word.split(":", 1) for word in text.split())}
    except ValueError:
        return False
    return set(found) == set(distances) and all(abs(found[p] - float(distances[p])) <= 5.1e-5 for p in distances)
