"""Build-time tools of the repository (not installed, not in any image)."""
