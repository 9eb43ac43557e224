"""The nasd agent: attaches to the broker, announces its hardware, trains what it is assigned."""
