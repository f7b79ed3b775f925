"""The API's data shapes, one module per concept (``*Create`` / ``*Update`` / ``*Public``).

Every schema is what the HTTP API accepts or returns and what the registry stores;
validation messages say what to change.
"""

from cluster.schemas.base import IMPORT_PATH_PATTERN, MODEL_ID_PATTERN, NAME_PATTERN, Schema, utcnow
from cluster.schemas.batch import BatchPredictCreate, BatchProgress
from cluster.schemas.deployments import (
    RUNNING_STATES,
    Allocation,
    Autoscaling,
    DeploymentConfig,
    DeploymentEvent,
    DeploymentPublic,
    DeploymentRecord,
    DeploymentStatus,
    DeploymentUpdate,
    ReplicaView,
    Resources,
    RolloutOptions,
    RolloutState,
    SetVersionRequest,
    app_name,
)
from cluster.schemas.finetune import FineTuneCreate, FineTuneRestart
from cluster.schemas.models import ModelCreate, ModelKind, ModelPublic, ModelVersion, VersionCreate
from cluster.schemas.nodes import ClusterPublic, NodePublic, Page
from cluster.schemas.predictions import (
    AsyncAccepted,
    AsyncTask,
    AsyncTaskPublic,
    EmbedArgs,
    PredictRequest,
    PredictResponse,
)
from cluster.schemas.tasks import (
    FAILED_TASK_STATES,
    FINAL_TASK_STATES,
    DeleteRequest,
    DeployRequest,
    Task,
    TaskKind,
    TaskStatus,
    WaitFor,
)

__all__ = [
    "BatchPredictCreate",
    "BatchProgress",
    "FineTuneCreate",
    "FineTuneRestart",
    "AsyncAccepted",
    "AsyncTask",
    "AsyncTaskPublic",
    "WaitFor",
    "Allocation",
    "Autoscaling",
    "ClusterPublic",
    "DeleteRequest",
    "DeployRequest",
    "DeploymentConfig",
    "DeploymentEvent",
    "DeploymentPublic",
    "DeploymentRecord",
    "DeploymentStatus",
    "DeploymentUpdate",
    "EmbedArgs",
    "FAILED_TASK_STATES",
    "FINAL_TASK_STATES",
    "IMPORT_PATH_PATTERN",
    "MODEL_ID_PATTERN",
    "ModelCreate",
    "ModelKind",
    "ModelPublic",
    "ModelVersion",
    "NAME_PATTERN",
    "NodePublic",
    "Page",
    "PredictRequest",
    "PredictResponse",
    "RUNNING_STATES",
    "ReplicaView",
    "Resources",
    "RolloutOptions",
    "RolloutState",
    "Schema",
    "SetVersionRequest",
    "Task",
    "TaskKind",
    "TaskStatus",
    "VersionCreate",
    "app_name",
    "utcnow",
]
