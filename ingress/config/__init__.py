"""Hot reload: the config file watch and the revisions shared through NATS KV."""
