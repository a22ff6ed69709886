"""Video: generated clips with ground truth, camera motion, per-worker scene coverage, temporal policies.

No model here: these modules decide and account for what each worker sees across frames.
"""
