"""The cloud worker process: a gRPC server running plan stages (see `pedvit.cloud.worker`)."""

from pedvit.cloud.worker import WorkerServer, WorkerServicer, serve

__all__ = ["WorkerServer", "WorkerServicer", "serve"]
