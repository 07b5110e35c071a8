"""``python -m pat_seg`` is the ``pat-seg`` command."""

from pat_seg.cli import main

main()
