"""A synthetic NTU corpus in the exact download formats (`skeleton`: `.skeleton` text)."""
