"""The C++ build's Debian packages (requirements/system-packages.txt) cover what the build needs.

A fresh machine gets exactly the packages the list names (and their dependencies, without
recommends), so every pkg-config module and program serving/ranker's CMake files ask for must be
owned, on this machine, by a listed package or one of its dependencies. The owners come from dpkg
and apt-cache, not from the list; the needs come from the CMake files, not from the list.
The installer's decisions are checked with stand-in apt-get and dpkg-query commands."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIST = ROOT / "requirements" / "system-packages.txt"
INSTALLER = ROOT / "requirements" / "install-system-packages.sh"
CMAKE_DIR = ROOT / "serving" / "ranker"

PKG_CHECK_OPTIONS = {"REQUIRED", "QUIET", "IMPORTED_TARGET", "GLOBAL", "NO_CMAKE_PATH", "NO_CMAKE_ENVIRONMENT_PATH"}
# find_package() names the test knows: what each needs from the system, if anything.
KNOWN_PACKAGES = {"Torch": set(),  # the torch wheel in .venv (make ranker passes its prefix)
                  "PkgConfig": {"program:pkg-config"}, "Threads": set()}
# Needed by any CMake build here: CMake itself, its default generator, a C++ compiler.
BUILD_TOOLS = {"program:cmake", "program:make", "program:g++"}


def declared() -> tuple[list[str], dict[str, str]]:
    """(the listed packages, need -> the package listed for it)."""
    packages, needs = [], {}
    for line in LIST.read_text().splitlines():
        words = line.split("#", 1)[0].split()
        if words:
            packages.append(words[0])
            needs.update({need: words[0] for need in words[1:]})
    return packages, needs


def _cmake_calls(command: str) -> list[list[str]]:
    """The arguments of every call of `command` in the CMake files under serving/ranker."""
    calls = []
    for path in [*CMAKE_DIR.rglob("CMakeLists.txt"), *CMAKE_DIR.rglob("*.cmake")]:
        if "build" in path.relative_to(CMAKE_DIR).parts:
            continue
        text = re.sub(r"#[^\n]*", "", path.read_text())
        calls += [m.group(1).split() for m in re.finditer(rf"\b{command}\s*\(([^)]*)\)", text, re.IGNORECASE)]
    return calls


def cmake_needs() -> set[str]:
    """What serving/ranker's CMake files ask of the system, as need strings."""
    needs = set(BUILD_TOOLS)
    for command in ("pkg_check_modules", "pkg_search_module"):
        for args in _cmake_calls(command):
            needs |= {"pkg-config:" + re.split(r"[<>=]", a)[0] for a in args[1:] if a not in PKG_CHECK_OPTIONS}
    for args in _cmake_calls("find_program"):
        names = args[args.index("NAMES") + 1:args.index("NAMES") + 2] if "NAMES" in args else args[1:2]
        needs |= {"program:" + name for name in names}
    for args in _cmake_calls("find_package"):
        assert args[0] in KNOWN_PACKAGES, (
            f"find_package({args[0]}) in serving/ranker: this test does not know which system file it needs; "
            f"add it to KNOWN_PACKAGES and its package to requirements/system-packages.txt")
        needs |= KNOWN_PACKAGES[args[0]]
    return needs


def test_the_cmake_needs_are_read_from_the_cmake_files():
    """The parser finds what CMakeLists.txt asks for today (written out by hand from the file)."""
    assert cmake_needs() == {"program:cmake", "program:make", "program:g++", "program:pkg-config",
                             "pkg-config:grpc++", "pkg-config:protobuf", "pkg-config:cpp-httplib",
                             "pkg-config:simdjson", "pkg-config:CLI11", "pkg-config:zlib", "pkg-config:hiredis",
                             "program:protoc", "program:grpc_cpp_plugin"}


def test_every_need_of_the_cmake_files_is_listed():
    _, needs = declared()
    assert cmake_needs() - set(needs) == set(), "add these to requirements/system-packages.txt"


needs_debian = pytest.mark.skipif(not (shutil.which("dpkg") and shutil.which("apt-cache")),
                                  reason="a Debian machine (dpkg, apt-cache) is what make setup-system serves")


def _pc_modules(module: str, seen: set[str]) -> None:
    """`module` and every module it requires, recursively (pkg-config's Requires and Requires.private)."""
    if module in seen:
        return
    seen.add(module)
    for flag in ("--print-requires", "--print-requires-private"):
        out = subprocess.run(["pkg-config", flag, module], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.split():
                _pc_modules(line.split()[0], seen)


def _file_of(need: str) -> Path | None:
    kind, name = need.split(":", 1)
    if kind == "program":
        found = shutil.which(name)
        return Path(os.path.realpath(found)) if found else None
    out = subprocess.run(["pkg-config", "--path", name], capture_output=True, text=True)
    return Path(os.path.realpath(out.stdout.strip())) if out.returncode == 0 and out.stdout.strip() else None


def _owner(path: Path) -> str | None:
    """The Debian package that installed `path` (dpkg -S), trying the path with and without /usr."""
    text = str(path)
    for candidate in (text, text.removeprefix("/usr"), "/usr" + text):
        out = subprocess.run(["dpkg", "-S", candidate], capture_output=True, text=True)
        if out.returncode == 0:
            return out.stdout.split(":", 1)[0].strip()
    return None


def _closure(packages: list[str]) -> set[str]:
    """`packages` and everything they depend on, as apt-get install --no-install-recommends takes them."""
    out = subprocess.run(["apt-cache", "depends", "--recurse", "--no-recommends", "--no-suggests", "--no-conflicts",
                          "--no-breaks", "--no-replaces", "--no-enhances", *packages],
                         capture_output=True, text=True, check=True).stdout
    return {line.split(":")[0] for line in out.splitlines() if line and not line[0].isspace()}


@needs_debian
def test_every_file_the_build_needs_belongs_to_a_listed_package_or_its_dependencies():
    packages, _ = declared()
    modules: set[str] = set()
    needs = cmake_needs()
    if shutil.which("pkg-config"):
        for need in [n for n in needs if n.startswith("pkg-config:")]:
            _pc_modules(need.split(":", 1)[1], modules)
    needs |= {"pkg-config:" + m for m in modules}
    provided = _closure(packages)
    problems = []
    for need in sorted(needs):
        path = _file_of(need)
        owner = _owner(path) if path else None
        if path is None:
            problems.append(f"{need}: not on this machine (make setup-system installs requirements/system-packages.txt)")
        elif owner is None:
            problems.append(f"{need}: {path} belongs to no Debian package (installed by hand?)")
        elif owner not in provided:
            problems.append(f"{need}: {path} belongs to {owner}, which no package in requirements/system-packages.txt "
                            f"brings (--no-install-recommends)")
    assert not problems, "\n".join(problems)


# ---- the installer's decisions, with stand-ins for apt-get and dpkg-query -----------------------

def _executable(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


@pytest.fixture
def fake_system(tmp_path):
    """A list of two made-up packages (one program, one pkg-config module), a stand-in apt-get that
    logs its calls and 'installs' by creating what each package provides, and a dpkg-query that
    reports the packages in installed.txt as installed."""
    bin_dir, pc_dir = tmp_path / "bin", tmp_path / "pkgconfig"
    bin_dir.mkdir(), pc_dir.mkdir()
    listing = tmp_path / "system-packages.txt"
    listing.write_text("# made-up packages\nmc-tool   program:mc-test-tool   # a tool\n"
                       "libmc-dev pkg-config:mc-test-module\n")
    installed = tmp_path / "installed.txt"
    installed.write_text("")
    provides = {"mc-tool": f"printf '#!/bin/sh\\n' > {bin_dir}/mc-test-tool; chmod +x {bin_dir}/mc-test-tool",
                "libmc-dev": f"printf 'Name: m\\nDescription: m\\nVersion: 1\\n' > {pc_dir}/mc-test-module.pc"}
    _executable(bin_dir / "apt-get", "#!/bin/bash\n"
                f"echo \"$*\" >> {tmp_path}/apt.log\n"
                f"[ \"$1\" = update ] && exit 0\n"
                f"[ -e {tmp_path}/broken ] && exit 0\n"  # an apt-get that installs nothing useful
                "for p in \"$@\"; do case $p in\n"
                + "".join(f"  {name}) {action}; echo {name} >> {installed} ;;\n" for name, action in provides.items())
                + "esac; done\n")
    _executable(bin_dir / "dpkg-query", "#!/bin/bash\n"
                f"grep -qx \"${{@: -1}}\" {installed} && printf 'install ok installed' || exit 1\n")
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "PKG_CONFIG_PATH": str(pc_dir),
           "PKG_CONFIG_LIBDIR": str(pc_dir), "APT_GET": str(bin_dir / "apt-get")}

    def run() -> subprocess.CompletedProcess:
        return subprocess.run(["bash", str(INSTALLER), str(listing)], env=env, capture_output=True, text=True)

    return run, tmp_path, provides


@pytest.mark.skipif(shutil.which("pkg-config") is None, reason="the stand-in module is found with pkg-config")
class TestInstaller:
    def test_nothing_missing_runs_no_apt_get(self, fake_system):
        run, tmp, provides = fake_system
        for action in provides.values():
            subprocess.run(action, shell=True, check=True)
        result = run()
        assert result.returncode == 0, result.stderr
        assert "every need of the C++ build and the live loop is met (2 packages" in result.stdout
        assert not (tmp / "apt.log").exists()

    def test_missing_needs_are_named_and_their_packages_installed(self, fake_system):
        run, tmp, _ = fake_system
        result = run()
        assert result.returncode == 0, result.stderr
        assert ("missing for the C++ build or the live loop: program mc-test-tool (mc-tool), "
                "pkg-config module mc-test-module (libmc-dev)") in result.stdout
        assert (tmp / "apt.log").read_text().splitlines() == [
            "update -qq", "install -y -qq --no-install-recommends mc-tool libmc-dev"]

    def test_an_installed_package_missing_its_file_is_reinstalled(self, fake_system):
        """The case dpkg -s on package names could not see: the name is installed, the file is not."""
        run, tmp, provides = fake_system
        subprocess.run(provides["mc-tool"], shell=True, check=True)
        (tmp / "installed.txt").write_text("mc-tool\nlibmc-dev\n")
        result = run()
        assert result.returncode == 0, result.stderr
        assert "missing for the C++ build or the live loop: pkg-config module mc-test-module (libmc-dev)" in result.stdout
        assert (tmp / "apt.log").read_text().splitlines()[-1] == \
            "install -y -qq --no-install-recommends --reinstall libmc-dev"
        assert (tmp / "pkgconfig" / "mc-test-module.pc").exists()

    def test_a_need_apt_get_does_not_meet_stops_the_run_naming_it(self, fake_system):
        run, tmp, _ = fake_system
        (tmp / "broken").touch()
        result = run()
        assert result.returncode == 1
        assert ("still missing after apt-get: program mc-test-tool (mc-tool), pkg-config module mc-test-module "
                "(libmc-dev)") in result.stderr

    def test_a_line_without_a_need_is_refused_with_its_line(self, fake_system):
        run, tmp, _ = fake_system
        (tmp / "system-packages.txt").write_text("mc-tool program:mc-test-tool\nlibmc-dev pkgconfig:mc\n")
        result = run()
        assert result.returncode == 2
        assert result.stderr.strip() == (f"{tmp}/system-packages.txt:2: unknown need 'pkgconfig:mc' "
                                         f"(expected program:NAME or pkg-config:NAME)")
