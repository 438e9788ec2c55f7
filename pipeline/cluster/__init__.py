"""Running the tile tasks on a Dask cluster (``--executor dask`` / ``--scheduler``).

settings: the ``[dask]`` table and the executor choice; executor: client, LocalCluster, submit and
collect; worker: the plugin that carries GDAL/Numba settings and serialises tasks per process;
progress: log lines of task progress when stderr is not a terminal.
"""
