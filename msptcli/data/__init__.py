"""Datasets: finding cases, reading fields, the prepared-sample format, the manifest, model inputs."""
