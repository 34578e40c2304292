#!/usr/bin/env bash
# Make the root filesystem of a small Java runtime base image offline, from this machine's JDK:
# busybox (testdata/busybox-rootfs.sh), a jlink'd runtime with the java.base module at /opt/java
# (/usr/bin/java links to it), and the shared libraries that runtime loads, copied from the host.
#   examples/jre-base.sh FILE.tar
# Import it with `docker import FILE.tar NAME:TAG` (kiln as docker) or `kiln import FILE.tar NAME:TAG`.
# Where a registry is reachable, a published JRE image (eclipse-temurin:17-jre, …) does the same job.
set -euo pipefail

out=${1:?usage: jre-base.sh FILE.tar}
here=$(cd "$(dirname "$0")" && pwd)
jlink=${JLINK:-$(command -v jlink || true)}
if [ -z "$jlink" ]; then
  echo "jre-base: no jlink found (apt-get install openjdk-17-jdk-headless)" >&2
  exit 1
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
root=$tmp/rootfs
"$here/../testdata/busybox-rootfs.sh" "$root"
"$jlink" --add-modules java.base --output "$root/opt/java" \
  --strip-debug --no-man-pages --no-header-files --compress=2
ln -s /opt/java/bin/java "$root/usr/bin/java"

# Every library the runtime's executables and libraries load, and the dynamic loader itself, at
# the same paths as on the host (libraries of the runtime itself are already inside it).
find "$root/opt/java" -type f \( -name '*.so' -o -perm -u+x \) -print0 |
  xargs -0 -n1 ldd 2>/dev/null |
  awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' |
  sort -u |
  while read -r lib; do
    case $lib in "$root"/*) continue ;; esac
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
  done

tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner \
  -C "$root" -cf "$out" .
