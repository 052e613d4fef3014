#!/usr/bin/env bash
# System packages the test suite needs on Debian/Ubuntu: PostgreSQL (for the tests about
# PostgreSQL), chromium (the web UI's browser tests), Debian's Blender (3.4, the real
# `blender` CLI, tested beside the bpy 5.0 wheel) and xvfb + xauth (`xvfb-run`: Blender
# with its window, for the add-on's UI test). The demo needs none of this: it renders
# with the bpy wheel from PyPI. Runs only as root (CI, containers); otherwise says what to
# install and carries on, so `make test` still runs what it can.
set -euo pipefail
packages=(blender postgresql chromium ffmpeg xvfb xauth)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
  echo "note: not installing ${missing[*]} (needs root and apt-get); tests needing them are skipped" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
