"""``python -m walking_noise.slurm``: the submit, status and array-task sub-commands."""

from walking_noise.slurm.cli import main

raise SystemExit(main())
