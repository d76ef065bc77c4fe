"""What `pip install` leaves in site-packages for a plugin package, without pip: its
module and a dist-info with its entry points. Entry-point discovery then runs for real
(importlib.metadata reads the directory once it is on sys.path or PYTHONPATH)."""
from __future__ import annotations

from pathlib import Path


def install(site: Path, project: dict, module_source: str) -> None:
    """Install `project` (a pyproject's [project] table) whose one module has this source."""
    site.mkdir(exist_ok=True)
    entry_points = project["entry-points"]["notifd"]
    [module] = set(entry_points.values())
    (site / f"{module}.py").write_text(module_source)
    info = site / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n")
    lines = "".join(f"{name} = {target}\n" for name, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[notifd]\n{lines}")
