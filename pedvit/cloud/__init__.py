"""The cloud side: the worker process (`pedvit.cloud.worker`, a gRPC server running plan stages) and the one way
to launch worker processes (`pedvit.cloud.launch`). Importing the package loads neither."""
