"""sslkit."""
