"""Training data for the repair strategies: records built from the `train` split only,
and the leakage guard (`leakage`) that refuses anything overlapping the `eval` split."""
