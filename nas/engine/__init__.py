"""The search: trials (objective), training, the budget and device ceilings, the study and its storage, worker
processes, signals and progress."""
