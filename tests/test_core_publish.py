"""Core tier: what a publish to the Comfy Registry would ship, and that none of it trips the registry's
scanner. The archive is the git-tracked files minus `.comfyignore` (gitignore syntax) plus
`[tool.comfy].includes` (comfy-cli's rule), so git itself computes the list here."""

import re
import shutil
import subprocess
import tomllib

import pytest

from conftest import ROOT

# What the registry's scanner flags in any file of a published version (process, eval / exec, network,
# environment reads). The pack needs none of them inside ComfyUI.
FLAGGED = {
    "subprocess": r"\bsubprocess\b",
    "os.system": r"\bos\.system\b",
    "eval": r"(?<![\w.])eval\s*\(",
    "exec": r"(?<![\w.])exec\s*\(",
    "network call": r"\b(requests|urllib|urllib3|httpx|http\.client|socket)\.\w+|\bfetch\s*\(\s*['\"]https?:",
    "environment read": r"\bos\.environ\b|\bgetenv\s*\(|\bprocess\.env\b",
    "pickle": r"\bpickle\.loads?\b|\btorch\.load\s*\(",
}
SHIPPED = ["__init__.py", "LICENSE", "README.md", "pyproject.toml", "requirements.txt", "web/js/modular_loops.js"]
NOT_SHIPPED = (".ci/", "tests/", "bench/", "tools/")


def published_files() -> list[str]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: the published file list is computed by git")
    git = ["git", "-C", str(ROOT)]
    tracked = subprocess.run([*git, "ls-files", "--cached"], capture_output=True, text=True, check=True).stdout.split()
    ignored = subprocess.run([*git, "ls-files", "--cached", "--ignored", "--exclude-from=.comfyignore"],
                             capture_output=True, text=True, check=True).stdout.split()
    includes = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["comfy"].get("includes", [])
    return sorted((set(tracked) - set(ignored)) | set(includes))


def test_publish_ships_what_runs_in_comfyui_and_nothing_else():
    files = published_files()
    for name in SHIPPED:
        assert name in files, name
    for package in ("modular/", "modular/blocks/", "nodes/"):
        assert any(f.startswith(package) and f.endswith(".py") for f in files), package
    assert any(f.startswith("example_workflows/") and f.endswith(".json") for f in files)
    assert not [f for f in files if f.startswith(NOT_SHIPPED)]
    assert not [f for f in files if f.startswith("docs/") and not f.startswith("docs/images/")]
    # what README shows must ship with it
    for image in re.findall(r"\]\((docs/images/[^)]+)\)", (ROOT / "README.md").read_text()):
        assert image in files, image


def test_published_files_hold_nothing_the_registry_scanner_flags():
    hits = []
    for name in published_files():
        path = ROOT / name
        if path.suffix in (".png", ".jpg", ".jpeg", ".webp", ".gif") or name == "LICENSE":
            continue
        text = path.read_text(encoding="utf-8")
        for what, pattern in FLAGGED.items():
            for m in re.finditer(pattern, text):
                line = text.count("\n", 0, m.start()) + 1
                hits.append(f"{name}:{line}: {what}: {text.splitlines()[line - 1].strip()[:100]}")
    assert not hits, "\n".join(hits)


def test_registry_metadata_is_filled_in():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    comfy = project["tool"]["comfy"]
    assert comfy["PublisherId"] and comfy["DisplayName"]
    # Lower bounds only (tested releases in docs/compatibility.md): an upper bound marks every later ComfyUI or
    # frontend incompatible in ComfyUI-Manager.
    assert comfy["requires-comfyui"].replace(" ", "") == ">=0.3.64"
    frontend = [d for d in project["project"]["dependencies"] if d.startswith("comfyui-frontend-package")]
    assert [d.replace(" ", "") for d in frontend] == ["comfyui-frontend-package>=1.27.10"]
    assert not [d for d in project["project"]["dependencies"] if re.search(r"<|==|~=", d)]
    assert "torch" not in " ".join(project["project"]["dependencies"]).replace("comfyui", "")
    icon = comfy["Icon"]
    assert icon.startswith("https://") and icon.split("/main/", 1)[-1] in published_files()
    version = project["project"]["version"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", version)
