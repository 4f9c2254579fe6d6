"""Budget tasks: period resets and alert checks."""
