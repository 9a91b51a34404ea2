"""Plans templates: the architecture blocks that `nnunet-laworder plans` adds to an nnU-Net plans file."""
