"""pizoo: an on-disk zoo of parameter-efficient experts over one frozen base model."""

__version__ = "0.1.0"
