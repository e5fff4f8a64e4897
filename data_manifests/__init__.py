"""The official NTU facts as files; read them through `ntu_pipeline.manifests`."""
