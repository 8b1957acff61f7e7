"""The coverage benchmark: targets x theories x baselines -> table and plots."""
