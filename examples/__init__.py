"""Examples that show the service from the outside."""
