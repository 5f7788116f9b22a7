#!/bin/sh
# e2e: Debian's Linux kernel with a busybox initramfs (tools/guest-images) boots, makes an ext2
# file system on a virtio-blk disk, writes a file to it, syncs and powers off; the host reads the
# file out of the image (debugfs); a second boot mounts the disk and reads the file back. The second boot has two vCPUs: Linux must bring the second up (INIT and start-up
# IPIs) and still take the disk's interrupt wherever it routes it.
#
# KVM on this project's machines cannot boot a stock Linux kernel (docs/core.md), so this runs
# under the software CPU backend (--accel emu), where virtio-blk's PCI interrupt reaches Linux
# as MSI-X messages to the emulated local APICs (about 60 s here for both boots).
# Arguments: the bulkhead binary, the source tree.
set -eu
bulkhead="$1"
tree="$2"
cache="${BULKHEAD_IMAGE_CACHE:-$HOME/.cache/bulkhead}"
images=$("$tree/tools/guest-images" --cache "$cache")
kernel=$(echo "$images" | sed -n 3p)  # the vmlinux: no decompression under the software CPU
initrd=$(echo "$images" | sed -n 2p)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
truncate -s 8M "$work/disk.img"
marker="bulkhead-e2e-$(date +%s)"

boot() {
  cpus="$1"
  shift
  timeout 300 "$bulkhead" run --accel emu --cpus "$cpus" --memory 256M --kernel "$kernel" \
    --initrd "$initrd" --disk "path=$work/disk.img" \
    --cmdline "console=ttyS0 quiet bulkhead.run=\"$1\""
}

boot 1 "load-ext4 && mke2fs -q /dev/vda && mount -t ext4 /dev/vda /mnt && echo $marker > /mnt/marker.txt && umount /mnt && sync" \
  > "$work/first.log" 2>&1 || true
grep -q "bulkhead-initramfs: exit 0" "$work/first.log" || { cat "$work/first.log"; exit 1; }
debugfs=$(command -v debugfs || echo /sbin/debugfs)
"$debugfs" -R "cat /marker.txt" "$work/disk.img" 2>/dev/null | grep -qx "$marker" ||
  { cat "$work/first.log"; echo "the image's file system lacks marker.txt with the marker"; exit 1; }
boot 2 "echo cpus=\$(nproc); load-ext4 && mount -t ext4 -o ro /dev/vda /mnt && cat /mnt/marker.txt; grep virtio0 /proc/interrupts" \
  > "$work/second.log" 2>&1 || true
grep -q "^$marker" "$work/second.log" || { cat "$work/second.log"; exit 1; }
grep -q "^cpus=2" "$work/second.log" || { cat "$work/second.log"; echo "Linux did not bring up 2 CPUs"; exit 1; }
# The disk's completions came as MSI-X messages (a vector for the queue, one for the config).
grep "PCI-MSI.*virtio0-req" "$work/second.log" | awk '{ exit !($2 + $3 > 0) }' ||
  { cat "$work/second.log"; echo "virtio-blk's queue interrupt was not an MSI-X vector Linux took"; exit 1; }
grep -q "PCI-MSI.*virtio0-config" "$work/second.log" || { cat "$work/second.log"; exit 1; }
echo "ok: a file written on ext2, read by the host (debugfs), read back on two vCPUs; completions by MSI-X"
