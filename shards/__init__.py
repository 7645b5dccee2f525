"""shards: every on-disk format (m3w, image_text, video_text webdataset shards with parquet
metadata and a manifest): atomic writers, streaming readers and statistics/reports."""
