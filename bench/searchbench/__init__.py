"""Helpers of ``bench/search_efficiency.py``: scenarios with enumerable spaces, their cached grid
truth, the strategies under test and the summary tables."""
