"""Configuration: one pydantic model per concern, assembled in edge.config.root."""
