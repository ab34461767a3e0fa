"""Command-line adapters: parse input, call a service, render output."""
