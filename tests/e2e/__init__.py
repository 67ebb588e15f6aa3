"""End-to-end: an application in its own process against the OTLP collector and vLLM mocks."""
