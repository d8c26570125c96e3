#!/usr/bin/env bash
# Install the Debian packages the C++ ranker's build needs, when it needs them.
#
#   requirements/install-system-packages.sh [LIST]      (LIST: requirements/system-packages.txt)
#
# Whether to run apt-get is decided by what the build needs (each program on PATH, each pkg-config
# module), not by package names: a package that is installed but lacks a needed file is reinstalled,
# and a need that apt-get does not meet stops the run with the need and its package named.
# `make setup-system` and docker/ranker.Dockerfile run this; APT_GET overrides how apt-get is called
# (default: apt-get as root, else sudo apt-get).
set -euo pipefail

list=${1:-"$(dirname "$0")/system-packages.txt"}
[ -r "$list" ] || { echo "install-system-packages: cannot read $list" >&2; exit 2; }

packages=() needs=() owners=()
line_no=0
while IFS= read -r line || [ -n "$line" ]; do
  line_no=$((line_no + 1))
  read -ra words <<<"${line%%#*}"
  [ ${#words[@]} -gt 0 ] || continue
  [ ${#words[@]} -gt 1 ] || { echo "$list:$line_no: package ${words[0]} names no need (program:NAME or pkg-config:NAME)" >&2; exit 2; }
  packages+=("${words[0]}")
  for need in "${words[@]:1}"; do
    case $need in
      program:?* | pkg-config:?*) needs+=("$need") owners+=("${words[0]}") ;;
      *) echo "$list:$line_no: unknown need '$need' (expected program:NAME or pkg-config:NAME)" >&2; exit 2 ;;
    esac
  done
done <"$list"

describe() {  # a need in words
  case $1 in
    program:*) echo "program ${1#program:}" ;;
    pkg-config:*) echo "pkg-config module ${1#pkg-config:}" ;;
  esac
}

unmet=()  # indices into needs
check_needs() {
  unmet=()
  local i
  for i in "${!needs[@]}"; do
    case ${needs[$i]} in
      program:*) command -v "${needs[$i]#program:}" >/dev/null 2>&1 || unmet+=("$i") ;;
      pkg-config:*) { command -v pkg-config >/dev/null 2>&1 && pkg-config --exists "${needs[$i]#pkg-config:}"; } \
                      || unmet+=("$i") ;;
    esac
  done
}

unmet_words() {  # "program protoc (protobuf-compiler), pkg-config module protobuf (libprotobuf-dev)"
  local i words=""
  for i in "${unmet[@]}"; do words+="${words:+, }$(describe "${needs[$i]}") (${owners[$i]})"; done
  echo "$words"
}

check_needs
if [ ${#unmet[@]} -eq 0 ]; then
  echo "system packages: every need of the C++ build and the live loop is met (${#packages[@]} packages in $list)"
  exit 0
fi
echo "system packages: missing for the C++ build or the live loop: $(unmet_words)"

if [ -z "${APT_GET:-}" ]; then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "no apt-get on this machine: install the packages that provide them by hand (${packages[*]})" >&2
    exit 1
  fi
  if [ "$(id -u)" -eq 0 ]; then APT_GET=apt-get; else APT_GET="sudo apt-get"; fi
fi

# A package that dpkg calls installed yet does not meet its need has lost files: reinstall it.
reinstall=()
for i in "${unmet[@]}"; do
  if [ "$(dpkg-query -W -f='${Status}' "${owners[$i]}" 2>/dev/null || true)" = "install ok installed" ]; then
    case " ${reinstall[*]} " in *" ${owners[$i]} "*) ;; *) reinstall+=("${owners[$i]}") ;; esac
  fi
done

export DEBIAN_FRONTEND=noninteractive
echo "$APT_GET install ${packages[*]}"
$APT_GET update -qq
$APT_GET install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
if [ ${#reinstall[@]} -gt 0 ]; then
  echo "$APT_GET install --reinstall ${reinstall[*]}  (installed, but a need is missing)"
  $APT_GET install -y -qq --no-install-recommends --reinstall "${reinstall[@]}" >/dev/null
fi

check_needs
if [ ${#unmet[@]} -gt 0 ]; then
  echo "system packages: still missing after apt-get: $(unmet_words); $list names a package that does not" \
       "provide it on this system" >&2
  exit 1
fi
echo "system packages: every need of the C++ build and the live loop is met"
