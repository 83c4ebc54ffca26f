"""Private helpers of every role: typed command lines, atomic result files, checkpoints, stopwatches, and the
aliases of the old module paths."""
