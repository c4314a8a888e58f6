"""ccarchive: archive HPC job metric data into ClusterCockpit's job archive v3."""

__version__ = "0.1.0"
