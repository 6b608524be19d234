"""The Textual chat app, imported as localllm.tui (Textual is imported only here)."""
