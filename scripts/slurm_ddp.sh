#!/bin/bash
# Multi-node DDP under SLURM: one task per GPU; Lightning reads SLURM_* variables (rank, world size,
# master address) itself, so srun starts `pat-seg` directly, no launcher.
# Pre-emption: SLURM sends SIGUSR1 90 s before the time limit; Lightning saves and requeues the job
# (auto-requeue), and a plain SIGTERM is turned into last.ckpt by pat_seg.callbacks.PreemptionCheckpoint.
# Submit: sbatch scripts/slurm_ddp.sh configs/cityscapes_pat.yaml
#SBATCH --job-name=pat-seg
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=4
#SBATCH --gpus-per-node=4
#SBATCH --cpus-per-task=8
#SBATCH --time=24:00:00
#SBATCH --signal=SIGUSR1@90
#SBATCH --requeue
#SBATCH --output=slurm-%j.out
set -euo pipefail
CONFIG=${1:?usage: sbatch scripts/slurm_ddp.sh CONFIG.yaml [extra pat-seg flags]}
shift
export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1}
srun pat-seg fit --config "$CONFIG" --config configs/trainer/ddp.yaml \
    --trainer.num_nodes="$SLURM_JOB_NUM_NODES" --trainer.devices="$SLURM_NTASKS_PER_NODE" \
    --ckpt_path last "$@"
