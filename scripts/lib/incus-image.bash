# incus-image.bash - how this project turns a cached debootstrap rootfs into an Incus image, the
# one way scripts/drill-image and scripts/lab both do it. Sourced, not run; needs root, the
# scripts beside it (old-glibc-rootfs, debian-mirror), zstd and, for image_import, Incus.
#
#   image_key TEXT...              16 hex digits over TEXT and what shapes every image (the
#                                  build steps here, old-glibc-rootfs): the cache key of an image
#   image_build TARBALL INCLUDE METADATA CUSTOMIZE
#                                  unless TARBALL exists: the bookworm minbase rootfs with the
#                                  packages INCLUDE (cached by old-glibc-rootfs), copied into a
#                                  temp dir beside TARBALL, `CUSTOMIZE IMAGE_DIR` run on the copy
#                                  (rootfs in IMAGE_DIR/rootfs, optional IMAGE_DIR/templates), the
#                                  postgres user and group renumbered to this host's, METADATA as
#                                  metadata.yaml (creation_date filled in), tar + zstd, renamed
#                                  into place; under a flock, so concurrent callers build once
#   image_import TARBALL ALIAS     make ALIAS that image: import TARBALL, or move the alias back
#                                  to it when Incus has it already
#
# Progress goes to stderr through the caller's log/die functions.

image_lib_dir=$(dirname "$(realpath -- "${BASH_SOURCE[0]}")")

image_key() {
    {
        printf '%s\n' "$@"
        sha256sum <"$image_lib_dir/../old-glibc-rootfs"
        # The steps below that shape the image (as bash prints them: comments do not count).
        declare -f image_build image_renumber_postgres image_move_aside
    } | sha256sum | cut -c1-16
}

# image_move_aside ROOTFS passwd|group ID: a user or group other than postgres holding ID in the
# image moves to a free system id below 1000, with its files, so postgres can take ID.
image_move_aside() {
    local r=$1 db=$2 id=$3 name new
    name=$(chroot "$r" getent "$db" "$id" | cut -d: -f1) || return 0
    [[ -n $name && $name != postgres ]] || return 0
    for ((new = 999; new > 100; new--)); do
        chroot "$r" getent "$db" "$new" >/dev/null || break
    done
    ((new > 100)) || die "no free system id in the image for $name"
    log "moving $name in the image from $db id $id to $new (postgres takes $id)"
    if [[ $db == passwd ]]; then
        chroot "$r" usermod -u "$new" "$name"
        find "$r" -xdev -uid "$id" -exec chown -h "$new" {} +
    else
        chroot "$r" groupmod -g "$new" "$name"
        find "$r" -xdev -gid "$id" -exec chgrp -h "$new" {} +
    fi
}

# image_renumber_postgres ROOTFS UID GID: the image's postgres gets this host's ids, so files it
# writes on a disk shared with the host (a bind-mounted repository) are the host postgres's.
image_renumber_postgres() {
    local r=$1 uid=$2 gid=$3 old_uid old_gid
    old_uid=$(chroot "$r" id -u postgres) old_gid=$(chroot "$r" id -g postgres)
    if [[ $old_gid != "$gid" ]]; then
        image_move_aside "$r" group "$gid"
        chroot "$r" groupmod -g "$gid" postgres
        find "$r" -xdev -gid "$old_gid" -exec chgrp -h "$gid" {} +
    fi
    if [[ $old_uid != "$uid" ]]; then
        image_move_aside "$r" passwd "$uid"
        chroot "$r" usermod -u "$uid" -g "$gid" postgres
        find "$r" -xdev -uid "$old_uid" -exec chown -h "$uid" {} +
    fi
}

image_build() {
    local tarball=$1 include=$2 metadata=$3 customize=$4
    local dir name
    dir=$(dirname "$tarball") name=$(basename "$tarball")
    [[ -f $tarball ]] && return 0
    mkdir -p "$dir"
    # A subshell: its lock and its EXIT trap end with it, whatever the caller has set.
    (
        exec 9>"$dir/.$name.lock"
        flock 9
        [[ -f $tarball ]] && exit 0
        start=$SECONDS
        rootfs=$(VEZA_ROOTFS_SUITE=bookworm "$image_lib_dir/../old-glibc-rootfs" \
                 --include "$include")
        # Under the lock no other build of this tarball runs: these are debris of killed runs.
        rm -rf --one-file-system "$dir/.build.$name."*
        tmp=$(mktemp -d "$dir/.build.$name.XXXXXX")
        trap 'rm -rf --one-file-system "$tmp"' EXIT
        log "assembling $tarball from $rootfs"
        mkdir "$tmp/image"
        cp -a "$rootfs" "$tmp/image/rootfs"
        rm -f "$tmp/image/rootfs/.veza-rootfs-key"
        "$customize" "$tmp/image"
        image_renumber_postgres "$tmp/image/rootfs" "$(id -u postgres)" "$(id -g postgres)"
        printf '%s' "$metadata" | sed "s/^creation_date: 0$/creation_date: $(date +%s)/" \
            >"$tmp/image/metadata.yaml"
        local parts=(metadata.yaml rootfs)
        [[ -d $tmp/image/templates ]] && parts+=(templates)
        tar -C "$tmp/image" --numeric-owner -cf - "${parts[@]}" |
            zstd -q -T0 -3 -o "$tmp/image.tar.zst"
        mv -T "$tmp/image.tar.zst" "$tarball"
        log "built $tarball in $((SECONDS - start)) s ($(du -h "$tarball" | cut -f1))"
    )
}

image_import() {
    local tarball=$1 alias=$2 want have
    want=$(sha256sum "$tarball" | cut -c1-64)
    have=$(incus image info "$alias" 2>/dev/null | awk '/^Fingerprint:/ {print $2}') || true
    if [[ $have != "$want" ]]; then
        [[ -z $have ]] || incus image alias delete "$alias"
        if incus image info "$want" >/dev/null 2>&1; then
            # Imported before and since un-aliased (another tree's build took the alias): a second
            # import of the same image would fail, so the alias moves back to it.
            log "pointing $alias at the already imported $tarball"
            incus image alias create "$alias" "$want" >&2
        else
            log "importing $tarball as $alias"
            incus image import "$tarball" --alias "$alias" >&2
        fi
    fi
}
