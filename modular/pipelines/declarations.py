"""diffusers' declarations, read once per installed diffusers: a JSON file in a folder the host gives (ComfyUI: its
user directory), keyed by diffusers' version, its modular pipelines' and guiders' files (name, size, time) and the
pack's own code, and rebuilt when any of them changes. What is kept is plain data in named sections: the classes
found in diffusers' source (`scan.shipped`), and what a host lists of each node (its inputs and description), so
that a start imports no diffusers class and reads no diffusers source. Reading and writing never fail a start: a
file that cannot be read is rebuilt, one that cannot be written is left (and the next start reads again)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

log = logging.getLogger("modular_loops")
FILE = "declarations.json"
PACK_ROOT = Path(__file__).resolve().parent.parent.parent  # the pack: its modular/ and nodes/ make what is kept


def fingerprint() -> str:
    """diffusers' version + a digest of its modular pipelines' and guiders' files (relative name, size, mtime) and of
    the pack's own Python files (their bytes): what the kept declarations depend on."""
    import diffusers

    from .scan import PACKAGE, GUIDERS_PACKAGE, package_dir

    digest = hashlib.sha1(diffusers.__version__.encode())
    for package in (PACKAGE, GUIDERS_PACKAGE):
        root = package_dir(package)
        for path in sorted(root.rglob("*.py")) if root else ():
            stat = path.stat()
            digest.update(f"{path.relative_to(root)}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    for area in ("modular", "nodes"):
        for path in sorted((PACK_ROOT / area).rglob("*.py")):
            digest.update(str(path.relative_to(PACK_ROOT)).encode() + b"\0" + path.read_bytes())
    return f"{diffusers.__version__}-{digest.hexdigest()[:16]}"


class DeclarationCache:
    """The kept declarations of one folder (None: nothing kept, everything read each time). `section(name)` is the
    kept data of a section ({} when the file is missing, stale or unreadable); `put` changes a section and `save`
    writes the file (atomically) when something changed."""

    def __init__(self, folder: str | os.PathLike | None, key: str | None = None):
        self.folder = Path(folder) if folder else None
        self.key = key if key is not None else (fingerprint() if self.folder else "")
        self.sections, self.changed = {}, False
        if self.folder is not None:
            try:
                data = json.loads((self.folder / FILE).read_text(encoding="utf-8"))
                if data.get("key") == self.key and isinstance(data.get("sections"), dict):
                    self.sections = data["sections"]
            except (OSError, ValueError):
                pass

    @property
    def fresh(self) -> bool:
        """Whether nothing was kept for this key (a first start, or diffusers / the pack changed)."""
        return not self.sections

    def section(self, name: str) -> dict:
        return self.sections.get(name, {})

    def put(self, name: str, data: dict):
        if self.sections.get(name) != data:
            self.sections[name], self.changed = data, True

    def save(self):
        if self.folder is None or not self.changed:
            return
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            tmp = self.folder / f".{FILE}.{os.getpid()}.tmp"
            tmp.write_text(json.dumps({"key": self.key, "sections": self.sections}), encoding="utf-8")
            os.replace(tmp, self.folder / FILE)
            self.changed = False
        except OSError as e:
            log.warning("[Modular Loops] could not keep diffusers' declarations in %s (%s): they are read again at "
                        "the next start", self.folder, e)
