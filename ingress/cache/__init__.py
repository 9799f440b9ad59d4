"""The response cache: keys, stores, and in-flight dedup within and across replicas."""
