"""Interactive front ends over the pipeline: the real-time window."""
