"""How a sweep runs (not what it runs): where its outputs go and which cluster it uses.

The CLI's `sweep` command builds `RunOptions` from its flags (their help is the descriptions
below); tests build it directly. Strict: a misspelt option is an error.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from raygrid.stages.config import Strict


class RunOptions(Strict):
    output_dir: str = Field(
        "raygrid-runs", description="local folder for the MLflow store (by default), the report and logs")
    storage: str | None = Field(
        None, description="Ray Tune/Train storage for trial state and checkpoints (default: OUTPUT_DIR/ray); "
        "must be shared (S3/NFS) on a multi-node cluster")
    s3_endpoint_url: str | None = Field(
        None, description="endpoint of an S3-compatible store (MinIO, moto); credentials come from the usual AWS "
        "environment variables or instance profile")
    tracking_uri: str | None = Field(
        None, description="MLflow tracking URI (default: sqlite:///OUTPUT_DIR/mlflow.db with artifacts in "
        "OUTPUT_DIR/mlartifacts)")
    artifact_root: str | None = Field(
        None, description="where MLflow stores artifacts of a new experiment (default: OUTPUT_DIR/mlartifacts with "
        "the local store; the server's setting with --tracking-uri http://...)")
    data_root: str | None = Field(
        None, description="root of the datasets (overrides the space's data_root; default $RAYGRID_DATA, else the "
        "raygrid cache, where the demo sets are built)")
    weights_dir: str | None = Field(
        None, description="folder of pretrained weight files (default: $RAYGRID_WEIGHTS or ~/.cache/raygrid/weights)")
    address: str | None = Field(
        None, description="Ray cluster address ('auto' on a cluster head); default: start a local Ray instance")
    num_cpus: Annotated[int, Field(gt=0)] | None = Field(None, description="CPUs for a local Ray instance (default: all)")
    num_gpus: Annotated[int, Field(ge=0)] | None = Field(
        None, description="GPUs for a local Ray instance (default: all visible)")
    max_concurrent: Annotated[int, Field(ge=1)] | None = Field(
        None, description="cap on concurrent trials per stage, at least 1 (default: what the cluster can hold ÷ "
        "a trial's resources; on an autoscaling cluster, with the nodes its autoscaler may add)")
    cluster_config: str | None = Field(
        None, description="the autoscaling cluster's config (cluster.yaml, or ~/ray_bootstrap_config.yaml on a "
        "`ray up` head) to size concurrency by; default: the config of the autoscaler running on this head, "
        "else the resources present")
    node_timeout: Annotated[float, Field(gt=0)] = Field(
        30.0, description="minutes a trial's workers may wait for room (autoscaled nodes) before the sweep stops "
        "with 'no GPU node came up'")
    verbose: bool = Field(
        False, description="show Ray's and Tune's output on the console (default: in OUTPUT_DIR/logs/, with one "
        "progress line per stage on the console)")
    resume: bool = Field(
        False, description="continue an interrupted sweep of the same space and output/storage: finished trials "
        "are kept, unfinished ones resume from their last checkpoint")
    report: bool = Field(True, description="build the analysis and report at the end")
