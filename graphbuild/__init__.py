"""Graph build stage: raw KuaiLive-layout logs -> validated, id-mapped gifting graph (Parquet)."""
