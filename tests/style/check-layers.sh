#!/bin/sh
# The style suite: the layers depend one way (docs/architecture.md):
#   protocols -> channel -> faults -> {kernel, servers/sdk -> servers/*}
# Nothing under kernel/ includes servers/, nothing under servers/ includes kernel/, and the
# shared libraries include neither.
set -u
cd "$(dirname "$0")/../.."
status=0
check() {
  folder=$1
  pattern=$2
  what=$3
  hits=$(grep -rnE "#include \"($pattern)/" "$folder" --include='*.h' --include='*.c++' --include='*.c')
  if [ -n "$hits" ]; then
    echo "$hits"
    echo "layers: $folder/ must not include $what (see docs/architecture.md, 'Layers')"
    status=1
  fi
}
check kernel 'servers' 'servers/'
check servers 'kernel' 'kernel/'
check channel 'kernel|servers|faults' 'kernel/, servers/ or faults/'
check faults 'kernel|servers' 'kernel/ or servers/'
if [ "$status" = 0 ]; then echo "layers: kernel, servers, channel and faults include only what they may"; fi
exit $status
