#!/usr/bin/env bash
# Make a small busybox root filesystem offline, from Debian's busybox-static.
#   testdata/busybox-rootfs.sh DIR          write the tree into DIR (created; must be empty or absent)
#   testdata/busybox-rootfs.sh --tar FILE   write it as a deterministic tar archive
# The tree: /bin/busybox with one symlink per applet, /etc/passwd, /etc/group, /tmp (1777),
# /root, /home, /var, /proc, /sys, /dev mount points. Same bytes on every run.
set -euo pipefail

busybox=${BUSYBOX:-/bin/busybox}
[ -x "$busybox" ] || busybox=/usr/bin/busybox
if [ ! -x "$busybox" ] || ! "$busybox" --list >/dev/null 2>&1; then
  echo "busybox-rootfs: no static busybox found (apt-get install busybox-static)" >&2
  exit 1
fi

make_tree() {
  local root=$1
  mkdir -p "$root"
  if [ -n "$(ls -A "$root")" ]; then
    echo "busybox-rootfs: $root is not empty" >&2
    exit 1
  fi
  mkdir -p "$root"/{bin,sbin,etc,root,home,var,proc,sys,dev,usr/bin,usr/sbin,tmp}
  chmod 1777 "$root/tmp"
  chmod 700 "$root/root"
  install -m 755 "$busybox" "$root/bin/busybox"
  local applet
  for applet in $("$busybox" --list); do
    [ "$applet" = busybox ] && continue
    ln -sf busybox "$root/bin/$applet"
  done
  cat >"$root/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
bin:x:2:2:bin:/bin:/bin/false
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
PASSWD
  cat >"$root/etc/group" <<'GROUP'
root:x:0:
daemon:x:1:
bin:x:2:
wheel:x:10:root
nogroup:x:65534:
GROUP
  chmod 644 "$root/etc/passwd" "$root/etc/group"
}

if [ "${1:-}" = --tar ]; then
  out=${2:?usage: busybox-rootfs.sh --tar FILE}
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  make_tree "$tmp/rootfs"
  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner --format=pax \
      --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
      -C "$tmp/rootfs" -cf "$out" .
else
  make_tree "${1:?usage: busybox-rootfs.sh DIR | --tar FILE}"
  # Fixed mtimes so a tree made twice is identical.
  find "$1" -exec touch -h -d @0 {} +
fi
