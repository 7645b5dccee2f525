"""pipelines: the Apache Beam ETL jobs (m3w, image-text, video-text). The only place Beam
appears; composes crawl + preprocess + shards into runner-agnostic jobs.

    flamboyance etl m3w        --input 'data/web/*.warc.gz' --output data/shards/m3w
    flamboyance etl image-text --input 'data/web/*.warc.gz' --output data/shards/image_text
    flamboyance etl video-text --input 'data/web/*.warc.gz' --output data/shards/video_text

Modules: `config` (typed job configs), `common` (keys, counters, dead letters, WARC/table
inputs, deterministic shard assignment and writing), `media` (image/video download and
decoding), `m3w`, `pairs` (caption-pair sources shared by image-text and video-text),
`image_text`, `video_text`, `cli`. Each job module has `build_<job>(pipeline, ...)` to add the
job to a pipeline and `run_<job>(...)` to run it and report its counters.
"""
