#!/usr/bin/env bash
# install-deps.sh -- the Debian/Ubuntu packages shardlm builds and tests with.
# Runs apt-get only for what is missing; needs root (or sudo) the first time.
set -euo pipefail
pkgs=(build-essential cmake pkg-config python3 python3-venv python3-pip git curl
      libjansson-dev libpcre2-dev libutf8proc-dev libmicrohttpd-dev libcurl4-openssl-dev
      libopenmpi-dev openmpi-bin clang libclang-rt-14-dev libomp-dev valgrind iproute2)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing: ${missing[*]}"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO=sudo
$SUDO apt-get update -q
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
