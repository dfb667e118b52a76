"""awx/execution-environment.yml generates a complete build context, offline.

No container can be built here (no image registry is reachable), so this runs `ansible-builder
create` - which writes the Containerfile and the _build/ context without pulling anything - in a
network namespace with no network, and checks what a `podman build` of that context would do:

- the Containerfile installs the pinned ansible-core and ansible-runner (requirements/dev.txt) into
  the declared base image, installs the galaxy requirements and runs ansible-builder's introspection;
- the galaxy requirements name this collection's tarball, which the context holds (the version
  galaxy.yml declares), and its dependencies with galaxy.yml's version ranges;
- introspection of that very tarball - the script the build runs - yields the collection's Python
  requirements (every third-party library plugins/ imports) and system packages (bindep.txt);
- none of the development tools end up in the image.
"""

import ast
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tarfile

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[3]
VENV_BIN = pathlib.Path(sys.executable).parent
EE_FILE = ROOT / "awx" / "execution-environment.yml"
GALAXY = yaml.safe_load((ROOT / "galaxy.yml").read_text())
COLLECTION_TARBALL = "%s-%s-%s.tar.gz" % (GALAXY["namespace"], GALAXY["name"], GALAXY["version"])
# Import name -> distribution, where they differ.
DISTRIBUTIONS = {"bson": "pymongo", "yaml": "pyyaml"}
# Libraries every execution environment already has (ansible-core's own dependencies).
PROVIDED_BY_ANSIBLE_CORE = {"pyyaml", "jinja2", "cryptography", "packaging", "resolvelib"}


def offline_prefix():
    """A command prefix that runs without any network (a new, empty network namespace), or None."""
    for prefix in (["unshare", "-n"], ["unshare", "-rn"]):
        try:
            if subprocess.run(prefix + ["true"], capture_output=True, check=False, timeout=10).returncode == 0:
                return prefix
        except (OSError, subprocess.TimeoutExpired):
            continue
    return None


def requirement_names(text):
    names = set()
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.add(re.split(r"[<>=!~;\[ ]", line, maxsplit=1)[0].lower().replace("_", "-"))
    return names


@pytest.fixture(scope="module")
def context(tmp_path_factory):
    """The build context, generated from a copy of the EE definition with the collection built into place."""
    tmp = tmp_path_factory.mktemp("ee")
    ee = yaml.safe_load(EE_FILE.read_text())
    # The definition refers to files relative to itself; mirror the repository layout it needs.
    repo = tmp / "repo"
    ee_copy = repo / EE_FILE.relative_to(ROOT)
    ee_copy.parent.mkdir(parents=True)
    shutil.copy(EE_FILE, ee_copy)
    deps = ee["dependencies"]
    for key in ("galaxy", "python", "system"):
        if isinstance(deps.get(key), str):
            target = (ee_copy.parent / deps[key]).resolve()
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy((EE_FILE.parent / deps[key]).resolve(), target)
    # The collection tarball goes where additional_build_files expects `make build` to leave it.
    [tarball_entry] = [f for f in ee["additional_build_files"] if f["src"].endswith(".tar.gz")]
    out_dir = (ee_copy.parent / tarball_entry["src"]).resolve().parent
    subprocess.run([str(VENV_BIN / "ansible-galaxy"), "collection", "build", "--force", "--output-path", str(out_dir),
                    str(ROOT)], check=True, capture_output=True, timeout=300)

    prefix = offline_prefix() or []
    ctx = tmp / "context"
    proc = subprocess.run(prefix + [str(VENV_BIN / "ansible-builder"), "create", "-f", str(ee_copy), "-c", str(ctx),
                                    "-v", "3"], capture_output=True, text=True, timeout=300, check=False)
    return {"proc": proc, "offline": bool(prefix), "ctx": ctx, "ee": ee, "tarball_entry": tarball_entry, "tmp": tmp}


def test_create_succeeds(context):
    proc = context["proc"]
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "No matches" not in proc.stdout + proc.stderr, "an additional build file is missing:\n" + proc.stdout
    assert "Complete! The build context can be found at" in proc.stdout


def test_create_needs_no_network(context):
    if not context["offline"]:
        pytest.skip("no network namespace can be created here (unshare -n / -rn): offline creation unproven")
    assert context["proc"].returncode == 0, context["proc"].stdout + context["proc"].stderr


def test_containerfile_builds_the_declared_image(context):
    text = (context["ctx"] / "Containerfile").read_text()
    pins = dict(line.split("==") for line in (ROOT / "requirements" / "dev.txt").read_text().splitlines()
                if re.match(r"^ansible-(core|runner)==", line))
    assert 'ARG EE_BASE_IMAGE="%s"' % context["ee"]["images"]["base_image"]["name"] in text
    assert 'ARG ANSIBLE_INSTALL_REFS="ansible-core==%s ansible-runner==%s"' % (
        pins["ansible-core"], pins["ansible-runner"]) in text
    assert 'ARG PYCMD="/usr/bin/python3"' in text
    stages = re.findall(r"^FROM \S+ AS (\w+)$", text, flags=re.M)
    assert stages == ["base", "galaxy", "builder", "final"], stages
    galaxy = text[text.index("AS galaxy"):text.index("AS builder")]
    assert "COPY _build /build" in galaxy
    assert 'ansible-galaxy collection install $ANSIBLE_GALAXY_CLI_COLLECTION_OPTS -r requirements.yml ' \
           '--collections-path "/usr/share/ansible/collections"' in galaxy
    builder = text[text.index("AS builder"):text.index("AS final")]
    assert "COPY --from=galaxy /usr/share/ansible /usr/share/ansible" in builder
    assert "introspect.py introspect" in builder and "/output/scripts/assemble" in builder
    final = text[text.index("AS final"):]
    assert "RUN /output/scripts/check_ansible $PYCMD" in final
    assert "/output/scripts/install-from-bindep" in final
    assert "LABEL ansible-execution-environment=true" in final


def test_galaxy_requirements_hold_this_collection_and_its_dependencies(context):
    build = context["ctx"] / "_build"
    reqs = yaml.safe_load((build / "requirements.yml").read_text())["collections"]
    [own] = [r for r in reqs if r.get("type") == "file"]
    dest = context["tarball_entry"]["dest"]
    # The galaxy stage copies _build to /build, so /build/<dest>/<file> is _build/<dest>/<file> here.
    assert own["name"] == "/build/%s/%s" % (dest, COLLECTION_TARBALL), own
    tarball = build / dest / COLLECTION_TARBALL
    assert tarball.is_file(), "the context lacks %s" % tarball
    with tarfile.open(tarball) as tar:
        manifest = json.load(tar.extractfile("MANIFEST.json"))["collection_info"]
        names = set(tar.getnames())
    assert (manifest["namespace"], manifest["name"], manifest["version"]) == ("nodeops", "stack", GALAXY["version"])
    assert {"meta/execution-environment.yml", "requirements.txt", "bindep.txt", "playbooks/deploy.yml"} <= names
    others = {r["name"]: r.get("version") for r in reqs if r is not own}
    assert others == GALAXY["dependencies"]


def test_introspection_of_the_collection_yields_its_python_and_system_requirements(context):
    """Install the context's tarball and run the context's own introspect script on it, as the build does."""
    cols = context["tmp"] / "collections"
    tarball = context["ctx"] / "_build" / context["tarball_entry"]["dest"] / COLLECTION_TARBALL
    prefix = offline_prefix() or []
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(cols))
    subprocess.run(prefix + [str(VENV_BIN / "ansible-galaxy"), "collection", "install", "--no-deps", "--force", "-p",
                             str(cols), str(tarball)], check=True, capture_output=True, timeout=300, env=env)
    proc = subprocess.run(prefix + [sys.executable, str(context["ctx"] / "_build" / "scripts" / "introspect.py"),
                                    "introspect", str(cols)], capture_output=True, text=True, check=True, timeout=120)
    data = yaml.safe_load(proc.stdout)
    python = [line for line in data["python"] if line.endswith("# from collection nodeops.stack")]
    system = [line for line in data["system"] if line.endswith("# from collection nodeops.stack")]
    assert requirement_names("\n".join(python)) == requirement_names((ROOT / "requirements.txt").read_text())
    assert {"pymongo", "redis"} <= requirement_names("\n".join(python))
    bindep = [line for line in (ROOT / "bindep.txt").read_text().splitlines() if line and not line.startswith("#")]
    assert [line.split("  #")[0] for line in system] == bindep


def third_party_imports():
    """Top-level modules plugins/ imports that are neither the standard library nor Ansible."""
    found = set()
    for path in (ROOT / "plugins").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return {name for name in found
            if name not in sys.stdlib_module_names and name not in ("ansible", "ansible_collections", "__future__")}


def test_requirements_cover_every_library_the_plugins_import_and_no_dev_tool():
    declared = requirement_names((ROOT / "requirements.txt").read_text())
    needed = {DISTRIBUTIONS.get(name, name).lower() for name in third_party_imports()}
    assert {"pymongo", "redis"} <= needed, needed  # the scan works
    missing = needed - declared - PROVIDED_BY_ANSIBLE_CORE
    assert not missing, "plugins/ import %s, which requirements.txt does not list" % sorted(missing)
    dev_tools = requirement_names((ROOT / "requirements" / "dev.txt").read_text()) - needed
    assert not declared & dev_tools, "development tools in requirements.txt: %s" % sorted(declared & dev_tools)


def test_bindep_file_parses_and_names_packages_for_both_families():
    from bindep.depends import Depends  # pylint: disable=import-outside-toplevel

    deps = Depends((ROOT / "bindep.txt").read_text())
    rpm = {rule[0] for rule in deps.active_rules(["platform:rpm", "default"])}
    dpkg = {rule[0] for rule in deps.active_rules(["platform:dpkg", "default"])}
    assert {"git-core", "tar", "gzip", "openssh-clients"} <= rpm, rpm
    assert {"git", "tar", "gzip", "openssh-client"} <= dpkg, dpkg
    meta = yaml.safe_load((ROOT / "meta" / "execution-environment.yml").read_text())
    assert meta["dependencies"] == {"python": "requirements.txt", "system": "bindep.txt"}
