"""Where a run lives: a local folder or a folder on object storage (``run_dir=s3://bucket/run``).

Every process works in a local folder (``RunStore.local``): for a local run_dir that is the run
folder itself; for a remote one a private scratch folder, filled from the store (``pull``) and
copied back (``push``) at checkpoints and at the end. Ray Train persists checkpoints straight to
the store (``storage_path`` + ``storage_filesystem``). pyarrow's filesystems do the I/O; S3
credentials come from the usual AWS environment variables / config files.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from flamboyance.trainer.config import StorageConfig


def is_remote(uri: str) -> bool:
    """True for an object-storage / fsspec-style URI (``s3://``, ``gs://`` ...), not a local path."""
    return "://" in uri and not uri.startswith("file://")


class RunStore:
    """The run folder ``run_dir`` on its filesystem, plus this process's local working folder."""

    def __init__(self, run_dir: str, storage: StorageConfig, *, scratch: str | None = None) -> None:
        self.run_dir = run_dir
        self.remote = is_remote(run_dir)
        if not self.remote:
            self.local = Path(run_dir.removeprefix("file://"))
            self.filesystem, self.root = None, str(self.local)
            return
        self.filesystem, self.root = _filesystem(run_dir, storage)
        base = scratch or storage.local_dir
        if base is not None:
            Path(base).mkdir(parents=True, exist_ok=True)
        self.local = Path(tempfile.mkdtemp(prefix="flamboyance-run-", dir=base))

    def close(self) -> None:
        """Delete the local working copy of a remote run (a local run_dir is left alone)."""
        if self.remote:
            shutil.rmtree(self.local, ignore_errors=True)

    def path(self, *parts: str) -> str:
        """The store path of ``run_dir/parts`` (for the filesystem, without its scheme)."""
        return "/".join([self.root.rstrip("/"), *parts])

    def exists(self, relative: str) -> bool:
        """Whether ``run_dir/relative`` exists in the store."""
        if not self.remote:
            return (self.local / relative).exists()
        import pyarrow.fs as pafs

        return self.filesystem.get_file_info(self.path(relative)).type != pafs.FileType.NotFound

    def pull(self, relative: str) -> bool:
        """Copy ``run_dir/relative`` (file or folder) from the store into the local folder; False
        when the store has none. A no-op for a local run_dir."""
        if not self.remote:
            return (self.local / relative).exists()
        if not self.exists(relative):
            return False
        import pyarrow.fs as pafs

        target = self.local / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        pafs.copy_files(self.path(relative), str(target), source_filesystem=self.filesystem,
                        destination_filesystem=pafs.LocalFileSystem())
        return True

    def push(self, relative: str) -> None:
        """Copy the local ``relative`` (file or folder) to the store (a no-op for a local run_dir)."""
        source = self.local / relative
        if not self.remote or not source.exists():
            return
        import pyarrow.fs as pafs

        if source.is_dir():
            self.filesystem.create_dir(self.path(relative), recursive=True)
        pafs.copy_files(str(source), self.path(relative), source_filesystem=pafs.LocalFileSystem(),
                        destination_filesystem=self.filesystem)

    def write_text(self, relative: str, text: str) -> None:
        """Write a small text file ``run_dir/relative`` directly in the store."""
        if not self.remote:
            (self.local / relative).parent.mkdir(parents=True, exist_ok=True)
            (self.local / relative).write_text(text)
            return
        with self.filesystem.open_output_stream(self.path(relative)) as handle:
            handle.write(text.encode())

    def read_text(self, relative: str) -> str:
        """Read a small text file ``run_dir/relative`` from the store."""
        if not self.remote:
            return (self.local / relative).read_text()
        with self.filesystem.open_input_stream(self.path(relative)) as handle:
            return handle.read().decode()

    def folders(self, relative: str) -> list[str]:
        """Names of the folders directly under ``run_dir/relative`` (none when it is missing)."""
        if not self.remote:
            folder = self.local / relative
            return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
        import pyarrow.fs as pafs

        infos = self.filesystem.get_file_info(pafs.FileSelector(self.path(relative), allow_not_found=True))
        return sorted(i.base_name for i in infos if i.type == pafs.FileType.Directory)


def _filesystem(uri: str, storage: StorageConfig):  # -> (pyarrow FileSystem, path without scheme)
    import pyarrow.fs as pafs

    scheme, _, path = uri.partition("://")
    if scheme == "s3":
        options = {}
        if storage.endpoint_override:
            endpoint = storage.endpoint_override
            if "://" in endpoint:
                options["scheme"], _, endpoint = endpoint.partition("://")
            options["endpoint_override"] = endpoint
        if storage.region:
            options["region"] = storage.region
        return pafs.S3FileSystem(**options), path.rstrip("/")
    filesystem, path = pafs.FileSystem.from_uri(uri)
    return filesystem, path.rstrip("/")


__all__ = ["RunStore", "is_remote"]
