#!/bin/sh
# Builds a Debian base image with debootstrap, for machines that reach a Debian
# mirror but no container registry (the Dockerfiles take it as BASE_IMAGE).
# Usage: scripts/docker_base_image.sh [IMAGE]   (default signalboard-base:bookworm)
# Env: DEBIAN_MIRROR (default: the first Debian mirror apt already uses),
#      DEBIAN_SUITE (default bookworm), REBUILD=1 to rebuild an existing image.
set -eu

image=${1:-signalboard-base:bookworm}
suite=${DEBIAN_SUITE:-bookworm}

if [ "${REBUILD:-0}" != 1 ] && docker image inspect "$image" >/dev/null 2>&1; then
    echo "base image $image exists (REBUILD=1 to rebuild)"
    exit 0
fi

# The mirror apt already uses is the one known to be reachable from here.
# Handles deb822 (.sources) and one-line (.list) formats; skips the security archive.
apt_mirror() {
    for f in /etc/apt/sources.list.d/*.sources /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -r "$f" ] || continue
        case "$f" in
        *.sources) awk '$1 == "URIs:" { for (i = 2; i <= NF; i++) print $i }' "$f" ;;
        *) awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; break } }' "$f" ;;
        esac
    done
}

mirror=${DEBIAN_MIRROR:-$(apt_mirror | grep '/debian/*$' | head -n 1)}
mirror=${mirror:-http://deb.debian.org/debian}
security=$(apt_mirror | grep -- '-security/*$' | head -n 1 || true)

command -v debootstrap >/dev/null || { echo "debootstrap is not installed (apt-get install debootstrap)" >&2; exit 1; }

workdir=$(mktemp -d)
rootfs="$workdir/rootfs"
cleanup() {
    # An interrupted debootstrap may leave its virtual filesystems mounted inside the tree.
    for mounted in dev/pts proc sys; do
        umount "$rootfs/$mounted" 2>/dev/null || true
    done
    rm -rf --one-file-system "$workdir"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

echo "debootstrap $suite from $mirror"
# python3-venv brings ensurepip, so the images create their own venv with pip;
# Debian's python3-pip is not needed.
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    "$suite" "$rootfs" "$mirror"

# The same mirrors for apt inside the image (deploy/*.Dockerfile install from them).
printf 'deb %s %s main\ndeb %s %s-updates main\n' "$mirror" "$suite" "$mirror" "$suite" \
    > "$rootfs/etc/apt/sources.list"
if [ -n "$security" ]; then
    printf 'deb %s %s-security main\n' "$security" "$suite" >> "$rootfs/etc/apt/sources.list"
fi
# Documentation and caches are of no use in a server image; the apt lists are refetched by apt-get update.
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb \
    "$rootfs"/var/log/*.log "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/*

tar -C "$rootfs" --numeric-owner -c . | docker import \
    -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    -c 'ENV LANG=C.UTF-8' \
    -c 'CMD ["/bin/bash"]' \
    - "$image"
echo "built $image"
