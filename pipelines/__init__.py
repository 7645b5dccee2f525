"""pipelines: the Apache Beam ETL jobs (m3w, image-text, video-text). The only place Beam
appears; composes crawl + preprocess + shards into runner-agnostic jobs."""
