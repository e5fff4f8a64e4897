"""Stages: each prepares one sample into the arrays it declares; `runner` shards, writes, resumes, reports."""
