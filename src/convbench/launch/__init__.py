"""Around runs."""
