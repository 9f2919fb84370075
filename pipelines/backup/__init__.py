"""Backups of the database and the model registry's objects to object storage, and restores.

A backup is one folder ``<URL>/<UTC timestamp>/`` holding a Parquet dump per table
(``db/<table>.parquet``, read in one consistent snapshot), the registry's objects copied byte
for byte (``registry/<name>/<version>/...``) and ``manifest.json``, written last: it lists
every file with its sha256 and size, the row count and content digest of every table, the
schema revision and where the backup came from. A folder without a manifest is incomplete and
ignored. Modules: ``manifest`` (the manifest and its checks), ``location`` (the backup folders
in object storage), ``tables`` (a table's portable Arrow form and its digest), ``snapshot``
(dump), ``load`` (restore into a database), ``objects`` (registry copies), ``retention``,
``errors`` (the refusal) and ``run`` (the two operations end to end). See ``docs/backup.md``.
"""
