"""The core every other layer builds on and nothing in it depends back on: errors, registries, schemas, file writing,
checkpoint reading, config files, the run context and the distributed helpers."""
