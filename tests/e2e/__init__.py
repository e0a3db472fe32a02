"""End-to-end journeys: whole clusters made by `kctl cluster up`, driven only through kctl."""
