"""Nightly orchestration: stages, locking, idempotent reruns, atomic publish, retention."""
