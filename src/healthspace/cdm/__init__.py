"""OMOP CDM: schema, ingest into the node store, synthetic hospitals."""
