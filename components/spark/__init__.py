"""OpenMLDB's batch engine on Spark (local mode or a cluster), from registry packages."""
