#!/bin/bash
# Two-node DDP with torchrun (no SLURM). Run on each node with its rank; MASTER_ADDR is node 0's address.
#   node 0: NODE_RANK=0 MASTER_ADDR=10.0.0.1 scripts/torchrun_two_nodes.sh configs/cityscapes_pat.yaml
#   node 1: NODE_RANK=1 MASTER_ADDR=10.0.0.1 scripts/torchrun_two_nodes.sh configs/cityscapes_pat.yaml
# On one machine (a CPU check): NODE_RANK=0 and 1 in two shells, MASTER_ADDR=127.0.0.1, GPUS_PER_NODE=1,
# and add --trainer.accelerator=cpu. Lightning reads the torchrun variables (RANK, WORLD_SIZE, ...).
set -euo pipefail
CONFIG=${1:?usage: scripts/torchrun_two_nodes.sh CONFIG.yaml [extra pat-seg flags]}
shift
GPUS_PER_NODE=${GPUS_PER_NODE:-$(python -c "import torch; print(max(1, torch.cuda.device_count()))")}
exec python -m torch.distributed.run --nnodes 2 --node_rank "${NODE_RANK:?set NODE_RANK}" \
    --nproc_per_node "$GPUS_PER_NODE" --master_addr "${MASTER_ADDR:?set MASTER_ADDR}" --master_port "${MASTER_PORT:-29500}" \
    -m pat_seg fit --config "$CONFIG" --config configs/trainer/ddp.yaml \
    --trainer.num_nodes=2 --trainer.devices="$GPUS_PER_NODE" --ckpt_path last "$@"
