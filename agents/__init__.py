"""The application's agents (a repository folder, not part of the `mas-runtime` wheel)."""
