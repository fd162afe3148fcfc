#!/usr/bin/env bash
# Makes sure a Docker engine answers on the local socket and the local test image
# `warren/busybox:latest` exists. Idempotent: installs docker.io and busybox-static from
# Debian's packages only when missing, starts dockerd in the background only when no
# engine answers. Needs root on a fresh machine (no systemd is assumed).
set -euo pipefail

log() { printf '[ensure-docker] %s\n' "$*" >&2; }

need_pkgs=()
command -v dockerd >/dev/null 2>&1 || need_pkgs+=(docker.io)
[ -x /bin/busybox ] || need_pkgs+=(busybox-static)
command -v ip >/dev/null 2>&1 || need_pkgs+=(iproute2)
command -v iptables >/dev/null 2>&1 || need_pkgs+=(iptables)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  log "installing ${need_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

if ! docker info >/dev/null 2>&1; then
  log "starting dockerd (log: /tmp/warren-dockerd.log)"
  # setsid: the engine outlives this script and the terminal that ran it.
  setsid dockerd >/tmp/warren-dockerd.log 2>&1 < /dev/null &
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    sleep 0.5
  done
  docker info >/dev/null 2>&1 || { log "dockerd did not answer within 30 s; see /tmp/warren-dockerd.log"; exit 1; }
fi

image=warren/busybox:latest
if ! docker image inspect "$image" >/dev/null 2>&1; then
  log "building $image from Debian's busybox-static"
  root=$(mktemp -d)
  trap 'rm -rf "$root"' EXIT
  mkdir -p "$root/bin" "$root/www" "$root/tmp" "$root/etc"
  cp /bin/busybox "$root/bin/busybox"
  for applet in sh httpd wget nc sleep cat echo ls ps kill true false env printf mkdir rm id hostname; do
    ln -s busybox "$root/bin/$applet"
  done
  printf 'root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$root/etc/passwd"
  printf 'hello from warren\n' >"$root/www/index.html"
  tar -C "$root" -c . | docker import -c 'CMD ["/bin/httpd","-f","-p","80","-h","/www"]' - "$image" >/dev/null
fi
log "engine $(docker version --format '{{.Server.Version}}') ready, image $image present"
